"""emotionq.inference.model: the real funasr model on the tiny untrained checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from emotionq.errors import AudioError, ConfigurationError
from emotionq.inference import LABELS, EmotionModel, write_checkpoint

SUM_TOLERANCE = 1e-5  # scores sum to 1
FUNASR_TOLERANCE = 1e-5  # our forward pass against funasr's own generate()


def test_load_reports_what_it_loaded(model, tiny_model_dir):
    assert model.model_id == str(tiny_model_dir)
    assert model.revision is None
    assert model.device == "cpu"
    assert model.dtype == "float32"
    assert model.untrained is True
    assert model.labels == list(LABELS)
    assert model.embed_dim == 64
    assert not model.automodel.model.training


def test_predict_returns_nine_english_scores_summing_to_one(model, speech):
    result = model.predict(speech)

    assert list(result["scores"]) == list(LABELS)
    assert abs(sum(result["scores"].values()) - 1.0) <= SUM_TOLERANCE
    assert result["top_label"] == max(result["scores"], key=result["scores"].get)
    assert result["top_score"] == result["scores"][result["top_label"]]
    assert result["duration_s"] == pytest.approx(speech.size / 16000)
    assert result["frame_rate"] == 50
    assert result["model"] == {
        "id": model.model_id, "revision": None, "device": "cpu", "dtype": "float32", "runtime": "torch",
        "untrained": True
    }
    assert "embedding" not in result and "frames" not in result
    [window] = result["timeline"]
    assert window["start"] == 0.0 and window["end"] == pytest.approx(result["duration_s"])
    assert window["scores"] == result["scores"] and window["top_label"] == result["top_label"]
    json.dumps(result)  # plain JSON-ready data


def test_single_window_equals_funasr_generate(model, funasr_model, speech):
    ours = model.predict(speech, granularity="frame", embedding=True)
    [utterance] = funasr_model.generate(speech, granularity="utterance", extract_embedding=True)
    [frame] = funasr_model.generate(speech, granularity="frame", extract_embedding=True)

    assert [t.split("/")[-1] for t in utterance["labels"][:8]] == list(LABELS[:8])
    np.testing.assert_allclose(list(ours["scores"].values()), utterance["scores"], atol=FUNASR_TOLERANCE, rtol=0)
    np.testing.assert_allclose(ours["embedding"], utterance["feats"], atol=FUNASR_TOLERANCE, rtol=0)
    np.testing.assert_allclose(np.array(ours["frames"]), frame["feats"], atol=FUNASR_TOLERANCE, rtol=0)


def test_predict_is_deterministic(model, speech):
    assert model.predict(speech) == model.predict(speech)


def test_long_audio_is_cut_into_windows(model, long_speech):
    result = model.predict(long_speech, granularity="frame", embedding=True)

    timeline = result["timeline"]
    assert len(timeline) == 3
    assert timeline[0]["start"] == 0.0 and timeline[-1]["end"] == pytest.approx(70.0)
    assert all(a["end"] == b["start"] for a, b in zip(timeline, timeline[1:]))
    assert all(0 < w["end"] - w["start"] <= 30.0 for w in timeline)
    for window in timeline:
        assert abs(sum(window["scores"].values()) - 1.0) <= SUM_TOLERANCE
    frames = np.array(result["frames"])
    assert frames.shape[1] == 64
    assert abs(frames.shape[0] - 70 * 50) <= 3 * 2  # each window loses up to ~2 frames at its edges
    # utterance embedding = frame-count-weighted mean of the windows = mean of all frames
    np.testing.assert_allclose(result["embedding"], frames.mean(axis=0), atol=1e-5, rtol=0)
    logits = model.automodel.model.proj(torch.tensor(result["embedding"])[None])
    np.testing.assert_allclose(list(result["scores"].values()), torch.softmax(logits, -1)[0].tolist(), atol=1e-5)


def test_window_length_is_a_parameter(model, long_speech):
    result = model.predict(long_speech[: 25 * 16000], window_s=10.0)

    assert [round(w["end"] - w["start"], 2) for w in result["timeline"]] == [8.34, 8.34, 8.32]


def test_embedding_and_frames_have_the_right_shapes(model, speech):
    result = model.predict(speech, granularity="frame", embedding=True)

    assert len(result["embedding"]) == model.embed_dim
    assert all(len(row) == model.embed_dim for row in result["frames"])
    assert abs(len(result["frames"]) - speech.size / 320) <= 2


def test_frame_scores_are_the_head_on_half_a_second_of_frames_ten_times_a_second(model, speech):
    """granularity=frame's scores: at 10 points a second, the head's softmax over the mean of the frames within
    0.25 s either side: the utterance scoring of that stretch, recomputed here from the frames."""
    result = model.predict(speech, granularity="frame")
    assert len(result["timeline"]) == 1  # one window: its frames are the recording's
    fs = result["frame_scores"]
    assert (fs["rate"], fs["window_s"], fs["labels"]) == (10, 0.5, list(LABELS))
    frames = torch.tensor(result["frames"])
    assert len(fs["t"]) == len(fs["scores"]) == -(-(len(frames) - 2) // 5)
    assert all(b > a for a, b in zip(fs["t"], fs["t"][1:])) and fs["t"][-1] <= result["duration_s"]
    for t, row in zip(fs["t"], fs["scores"]):
        centre = round(t * 50 - 0.5)
        with torch.inference_mode():
            pooled = frames[max(0, centre - 12) : centre + 13].mean(0, keepdim=True)
            want = torch.softmax(model.automodel.model.proj(pooled), -1)[0]
        assert row == pytest.approx(want.tolist(), abs=2e-4)
        assert sum(row) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("signal", ["silence", "dc", "quiet"])
def test_silence_and_near_silence_give_finite_scores(model, signal):
    samples = {
        "silence": np.zeros(32000, np.float32),
        "dc": np.full(32000, 0.25, np.float32),
        "quiet": np.random.default_rng(1).standard_normal(32000).astype(np.float32) * 1e-6,
    }[signal]

    result = model.predict(samples, granularity="frame", embedding=True)

    assert np.isfinite(list(result["scores"].values())).all()
    assert abs(sum(result["scores"].values()) - 1.0) <= SUM_TOLERANCE
    assert np.isfinite(result["embedding"]).all() and np.isfinite(result["frames"]).all()


def test_shortest_input(model, speech):
    assert len(model.predict(speech[:400], granularity="frame")["frames"]) == 1
    with pytest.raises(AudioError) as caught:
        model.predict(speech[:399])
    assert caught.value.code == "audio_too_short"


def test_non_finite_samples_are_refused(model, speech):
    bad = speech.copy()
    bad[5] = np.nan
    with pytest.raises(AudioError) as caught:
        model.predict(bad)
    assert caught.value.code == "audio_not_finite"


def test_bad_arguments(model, speech):
    with pytest.raises(ValueError):
        model.predict(speech, granularity="word")
    with pytest.raises(ValueError):
        model.predict(speech, window_s=0.5)


def test_threads_are_respected(tiny_model_dir):
    before = torch.get_num_threads()
    try:
        single = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="torch")
        assert torch.get_num_threads() == 1
        single.close()
    finally:
        torch.set_num_threads(before)


def test_close_frees_the_model(tiny_model_dir, speech, runtime_cache_dir):
    closing = EmotionModel.load(str(tiny_model_dir), runtime_cache_dir=runtime_cache_dir)
    closing.close()
    with pytest.raises(RuntimeError):
        closing.predict(speech)


def test_missing_directory_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="not a model directory"):
        EmotionModel.load(str(tmp_path / "nowhere"))


def test_directory_without_config_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="config.yaml"):
        EmotionModel.load(str(tmp_path))


def test_checkpoint_without_the_head_is_a_configuration_error(tmp_path):
    directory = write_checkpoint(tmp_path / "headless", arch="tiny")
    state = torch.load(directory / "model.pt")
    torch.save({k: v for k, v in state.items() if not k.startswith("proj.")}, directory / "model.pt")

    with pytest.raises(ConfigurationError, match="classification head"):
        EmotionModel.load(str(directory))


def test_wrong_labels_are_a_configuration_error(tmp_path, tiny_model_dir):
    directory = tmp_path / "five"
    shutil.copytree(tiny_model_dir, directory)
    (directory / "tokens.txt").write_text("angry\nhappy\nneutral\nsad\n<unk>\n", encoding="utf-8")

    with pytest.raises(ConfigurationError, match="pin a revision"):
        EmotionModel.load(str(directory))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_configuration_error(tiny_model_dir):
    with pytest.raises(ConfigurationError, match="CUDA"):
        EmotionModel.load(str(tiny_model_dir), device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_autocast_on_cuda_stays_close_to_fp32(tiny_model_dir, model, long_speech):
    gpu = EmotionModel.load(str(tiny_model_dir), device="cuda")
    try:
        assert gpu.dtype in ("bfloat16", "float16") and gpu.device.startswith("cuda")
        ours, reference = gpu.predict(long_speech), model.predict(long_speech)
        np.testing.assert_allclose(list(ours["scores"].values()), list(reference["scores"].values()), atol=0.02)
    finally:
        gpu.close()


def test_without_the_marker_a_model_is_not_flagged_untrained(tmp_path, tiny_model_dir, runtime_cache_dir):
    directory = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, directory)
    (directory / "emotionq.json").unlink()

    plain = EmotionModel.load(str(directory), runtime_cache_dir=runtime_cache_dir)
    try:
        assert plain.untrained is False and plain.info().untrained is False
    finally:
        plain.close()
