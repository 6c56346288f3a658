"""emotionq.inference.contract: the model the worker opens, its per-item results, what it says it is."""

from __future__ import annotations

import numpy as np
import pytest

from emotionq.errors import AudioError, ConfigurationError
from emotionq.inference import EmotionModel, ModelInfo, family, graphcache
from emotionq.inference.contract import Model
from emotionq.inference.encoder import TorchRuntime

THREADS = 2  # as the tiny model of conftest.py


def test_the_default_family_is_emotion2vec_and_keeps_the_contract(tiny_model_dir, speech):
    assert family() is EmotionModel
    opened: Model = family().load(str(tiny_model_dir), threads=THREADS, runtime="torch")
    try:
        info = opened.info()
        assert info == ModelInfo(id=str(tiny_model_dir), revision=None, device="cpu", dtype="float32",
                                 runtime="torch", untrained=True, runtime_note="asked for")
        [result] = opened.predict_batch([speech])
        assert result["model"] == info.output()
        assert set(info.output()) == {"id", "revision", "device", "dtype", "runtime", "untrained"}
    finally:
        opened.close()


def test_an_unknown_family_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="unknown model family 'whisper'"):
        family("whisper")


def test_predict_batch_answers_each_item_in_order(model, speech):
    too_short = np.zeros(10, dtype=np.float32)
    results = model.predict_batch([speech, too_short, speech[: 16000 * 2]],
                                  options=[{}, {}, {"granularity": "word"}])

    assert isinstance(results[0], dict) and results[0]["duration_s"] == pytest.approx(speech.size / 16000)
    assert isinstance(results[1], AudioError)
    assert isinstance(results[2], ValueError)


def test_the_runtime_is_handed_to_the_model(model, speech):
    """The same weights on a runtime built by the caller give the same scores (the strategy, not a swap)."""
    again = model.using(TorchRuntime(model.automodel.model))
    assert again.engine is not model.engine and again.runtime == "torch"
    assert again.predict(speech)["scores"] == pytest.approx(model.predict(speech)["scores"], abs=1e-6)


def test_without_a_cache_dir_the_graphs_go_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert graphcache.default_cache_dir() == tmp_path / "xdg" / "emotionq" / "onnx"
