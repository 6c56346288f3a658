"""The worker process's model holder: one model, loaded on first use (after the fork), warmed up, closed."""

from __future__ import annotations

import harness
from emotionq.worker.runtime import ModelHolder


def test_the_model_is_loaded_once_ready_to_answer(tiny_model_dir, speech_wav):
    from emotionq.inference import decode

    holder = ModelHolder(harness.settings(model=str(tiny_model_dir), torch_threads=1, runtime="torch"))
    assert not holder.loaded  # nothing before the first use: the parent never loads it
    first = holder.model
    assert holder.loaded and holder.model is first
    [result] = first.predict_batch([decode(speech_wav)])
    assert result["model"] == first.info().output()
    holder.close()
    assert not holder.loaded


def test_the_runtime_cache_is_the_setting(tiny_model_dir, tmp_path):
    holder = ModelHolder(harness.settings(model=str(tiny_model_dir), torch_threads=1, runtime="onnx",
                                          runtime_cache_dir=tmp_path / "graphs"))
    try:
        assert holder.model.info().runtime == "onnxruntime", holder.model.info().runtime_note
        assert list((tmp_path / "graphs").glob("*/manifest.json"))  # the graphs went where the setting says
    finally:
        holder.close()
