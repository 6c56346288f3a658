"""EmotionModel.predict_batch: several recordings in shared, padded forward passes, equal to one at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotionq.errors import AudioError
from emotionq.inference import EmotionModel, decode, group_windows, write_checkpoint
from emotionq.inference.funasr_patches import zeroed_padding
from emotionq.inference.windows import window_bounds

THREADS = 2  # as the tiny model of conftest.py

TOLERANCE = 1e-5  # absolute, CPU fp32: scores, embeddings and frame features, batched against one at a time
GPU_TOLERANCE = 0.02  # absolute, scores: CUDA autocast batched against CPU fp32 one at a time
WINDOW_S = 2.0  # so that the 5 s clip has 3 windows
SECONDS = [1.6, 0.9, 5.0, 2.7, 1.2]  # and a 35 ms cut: 6 recordings, 9 windows
FRAME = {"granularity": "frame", "embedding": True}


@pytest.fixture(scope="module")
def clips(make_speech, tmp_path_factory):
    directory = tmp_path_factory.mktemp("batch")
    clips = [decode(make_speech(directory / f"{i}.wav", seconds=s)) for i, s in enumerate(SECONDS)]
    return clips + [clips[0][8000:8560]]  # 35 ms from the middle of speech: one frame


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    directory = write_checkpoint(tmp_path_factory.mktemp("emotion2vec_base"), arch="base", seed=0)
    loaded = EmotionModel.load(str(directory), threads=THREADS, runtime="torch")
    yield loaded
    loaded.close()


@pytest.fixture(params=["tiny", "base"])
def any_model(request):
    return request.getfixturevalue("model" if request.param == "tiny" else "base_model")


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def funasr_alone(model: EmotionModel, samples: np.ndarray) -> dict:
    """What funasr's own generate() gives, one window at a time, combined over the windows as predict does."""
    windows = []
    for a, b in window_bounds(samples.size, WINDOW_S):
        # its scores are those of granularity="utterance" (the mean over all frames), whose
        # embedding is np.mean(frame feats, axis=0): one call gives all three
        [frame] = model.automodel.generate(samples[a:b], granularity="frame", extract_embedding=True)
        windows.append({"scores": frame["scores"], "embedding": frame["feats"].mean(axis=0), "frames": frame["feats"]})
    frames = np.concatenate([w["frames"] for w in windows])
    with torch.inference_mode():
        mean = torch.from_numpy(frames).mean(dim=0, keepdim=True)
        scores = torch.softmax(model.automodel.model.proj(mean), dim=-1)[0].tolist()
    return {"scores": scores, "embedding": frames.mean(axis=0), "frames": frames, "windows": windows}


def test_batch_matches_funasr_one_at_a_time(any_model, clips):
    results = any_model.predict_batch(clips, options=[FRAME] * len(clips), window_s=WINDOW_S)

    worst = 0.0
    for samples, ours in zip(clips, results):
        alone = funasr_alone(any_model, samples)
        assert len(ours["timeline"]) == len(alone["windows"])
        assert len(ours["frames"]) == len(alone["frames"])
        for window, reference in zip(ours["timeline"], alone["windows"]):
            worst = max(worst, max_diff(list(window["scores"].values()), reference["scores"]))
        if len(alone["windows"]) == 1:
            worst = max(worst, max_diff(list(ours["scores"].values()), alone["windows"][0]["scores"]))
            worst = max(worst, max_diff(ours["embedding"], alone["windows"][0]["embedding"]))
        worst = max(worst, max_diff(list(ours["scores"].values()), alone["scores"]))
        worst = max(worst, max_diff(ours["embedding"], alone["embedding"]))
        worst = max(worst, max_diff(ours["frames"], alone["frames"]))
    assert worst <= TOLERANCE, worst


def assert_same(batched: dict, alone: dict) -> None:
    assert batched.keys() == alone.keys()
    for key in ("duration_s", "frame_rate", "model", "top_label"):
        assert batched[key] == alone[key], key
    assert max_diff(list(batched["scores"].values()), list(alone["scores"].values())) <= TOLERANCE
    assert batched["top_score"] == pytest.approx(alone["top_score"], abs=TOLERANCE)
    assert len(batched["timeline"]) == len(alone["timeline"])
    for ours, theirs in zip(batched["timeline"], alone["timeline"]):
        assert (ours["start"], ours["end"], ours["top_label"]) == (theirs["start"], theirs["end"], theirs["top_label"])
        assert max_diff(list(ours["scores"].values()), list(theirs["scores"].values())) <= TOLERANCE
    for key in ("embedding", "frames"):
        if key in alone:
            assert np.shape(batched[key]) == np.shape(alone[key])
            assert max_diff(batched[key], alone[key]) <= TOLERANCE, key


def test_batch_equals_predict_per_item(any_model, clips):
    options = [FRAME, {}, FRAME, {"embedding": True}, {"granularity": "frame"}, FRAME]

    results = any_model.predict_batch(clips, options=options, window_s=WINDOW_S)

    assert len(results) == len(clips)
    for samples, option, batched in zip(clips, options, results):
        assert_same(batched, any_model.predict(samples, **option, window_s=WINDOW_S))
    assert len(results[2]["timeline"]) == 3  # the 5 s clip
    assert len(results[5]["frames"]) == 1  # the 35 ms one
    assert "embedding" not in results[1] and "frames" not in results[1]


def test_default_options_are_predicts(model, clips):
    batched = model.predict_batch(clips[:2])
    for samples, result in zip(clips, batched):
        assert_same(result, model.predict(samples))


def test_a_bad_item_fails_alone(model, clips):
    nan = clips[0].copy()
    nan[100] = np.nan
    items = [clips[0], nan, clips[3], clips[0][:10], clips[4], clips[1]]
    options = [{}, {}, {}, {}, {}, {"granularity": "word"}]

    results = model.predict_batch(items, options=options, window_s=WINDOW_S)

    assert isinstance(results[1], AudioError) and results[1].code == "audio_not_finite"
    assert isinstance(results[3], AudioError) and results[3].code == "audio_too_short"
    assert isinstance(results[5], ValueError)
    for i in (0, 2, 4):
        assert_same(results[i], model.predict(items[i], window_s=WINDOW_S))


def test_bad_call_arguments(model, clips):
    assert model.predict_batch([]) == []
    with pytest.raises(ValueError):
        model.predict_batch(clips[:1], window_s=0.5)
    with pytest.raises(ValueError):
        model.predict_batch(clips[:1], max_batch_windows=0)
    with pytest.raises(ValueError):
        model.predict_batch(clips[:2], options=[{}])
    [unknown] = model.predict_batch(clips[:1], options=[{"colour": "blue"}])
    assert isinstance(unknown, TypeError)


class PassCounter:
    """Counts forward passes (and their batch sizes) through the audio encoder, by a forward hook."""

    def __init__(self, model: EmotionModel) -> None:
        self.sizes: list[int] = []
        self._handle = model.automodel.model.modality_encoders["AUDIO"].register_forward_hook(self._seen)

    def _seen(self, module, args, output) -> None:
        self.sizes.append(args[0].shape[0])

    def __enter__(self) -> PassCounter:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def test_grouping_by_max_batch_windows(model, clips):
    near = [clips[2][: 32000 + 3200 * i] for i in range(5)]  # 2.0 to 2.8 s of speech

    with PassCounter(model) as passes:
        pairs = model.predict_batch(near, options=[FRAME] * 5, max_batch_windows=2)
    assert passes.sizes == [2, 2, 1]  # ceil(5 / 2): within 25% of each other, only max_batch_windows splits
    with PassCounter(model) as passes:
        together = model.predict_batch(near, options=[FRAME] * 5)
    assert passes.sizes == [5]
    for a, b in zip(pairs, together):
        assert_same(a, b)

    lengths = [b - a for samples in clips for a, b in window_bounds(samples.size, WINDOW_S)]
    expected = group_windows(lengths, max_windows=2, max_samples=120 * 16000)
    with PassCounter(model) as passes:
        model.predict_batch(clips, window_s=WINDOW_S, max_batch_windows=2)
    assert passes.sizes == [len(g) for g in expected]


def test_predict_scores_one_window_per_pass(model, clips):
    with PassCounter(model) as passes:
        model.predict(clips[2], window_s=WINDOW_S)
    assert passes.sizes == [1, 1, 1]


def test_group_windows_rules():
    # longest first, ties in input order
    assert group_windows([100, 300, 200, 300], max_windows=4, max_samples=10**6, max_pad_ratio=10) == [[1, 3, 2, 0]]
    # at most max_windows per pass
    assert group_windows([100] * 5, max_windows=2, max_samples=10**6) == [[0, 1], [2, 3], [4]]
    # padding at most 1.25 x the real samples: 100 + 80 -> 200 padded / 180 real is fine, + 40 -> 300 / 220 not
    assert group_windows([100, 80, 40, 35], max_windows=16, max_samples=10**6) == [[0, 1], [2, 3]]
    # at most max_samples padded samples; a window longer than that alone
    assert group_windows([500, 100, 100, 100], max_windows=16, max_samples=250) == [[0], [1, 2], [3]]
    assert group_windows([], max_windows=16, max_samples=250) == []


def test_funasr_padding_alone_changes_results_and_zeroing_fixes_it(any_model, clips):
    """The cause of the reported padding difference: the positional convolutions see padded frames."""
    import torch.nn.functional as F

    module = any_model.automodel.model
    short, long = clips[0][:16000], clips[3][:48000]
    with torch.inference_mode():
        sources = [F.layer_norm(torch.from_numpy(s), (s.size,)) for s in (short, long)]
        alone = module.extract_features(sources[0][None], padding_mask=None)["x"][0]
        batch = torch.zeros(2, long.size)
        batch[0, : short.size], batch[1] = sources
        padding_mask = torch.arange(long.size)[None, :] >= torch.tensor([short.size, long.size])[:, None]
        plain = module.extract_features(batch, padding_mask=padding_mask)
        with zeroed_padding(module, padding_mask):
            zeroed = module.extract_features(batch, padding_mask=padding_mask)
    n = alone.shape[0]
    assert int((~plain["padding_mask"][0]).sum()) == n  # the model's own frame mask: the valid frames
    assert max_diff(plain["x"][0, :n], alone) > 100 * TOLERANCE  # funasr with padding_mask: not the same
    assert max_diff(zeroed["x"][0, :n], alone) <= TOLERANCE


def test_alibi_cache_keeps_one_row(model, clips):
    model.predict_batch(clips, window_s=WINDOW_S)
    heads = model.automodel.model.modality_encoders["AUDIO"].modality_cfg.num_alibi_heads
    assert all(cached.shape[0] == heads for cached in model.automodel.model.alibi_biases.values())


def test_forward_passes_stay_few(model, clips):
    windows = sum(len(window_bounds(c.size, WINDOW_S)) for c in clips)
    with PassCounter(model) as passes:
        model.predict_batch(clips, window_s=WINDOW_S)
    assert sum(passes.sizes) == windows and len(passes.sizes) < windows


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_autocast_batch_on_cuda_stays_close_to_fp32_one_at_a_time(tiny_model_dir, model, clips):
    gpu = EmotionModel.load(str(tiny_model_dir), device="cuda")
    try:
        results = gpu.predict_batch(clips, options=[FRAME] * len(clips), window_s=WINDOW_S)
        for samples, ours in zip(clips, results):
            reference = model.predict(samples, **FRAME, window_s=WINDOW_S)
            assert ours["model"]["dtype"] in ("bfloat16", "float16")
            assert max_diff(list(ours["scores"].values()), list(reference["scores"].values())) <= GPU_TOLERANCE
            assert len(ours["frames"]) == len(reference["frames"])
            for window, theirs in zip(ours["timeline"], reference["timeline"]):
                assert max_diff(list(window["scores"].values()), list(theirs["scores"].values())) <= GPU_TOLERANCE
    finally:
        gpu.close()
