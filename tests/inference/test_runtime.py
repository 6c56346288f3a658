"""emotionq.inference.runtime and .export: the onnx graphs against funasr, their cache, the check, the fallback.

Tolerances: scores and embeddings within 1e-5 of funasr's own ``generate``; frames within 1e-5 x
their largest magnitude (about 4-5 here). Both runtimes are float32 and round differently: on the
tiny checkpoint funasr's own frames are ~1e-5 away from a float64 forward of the same module, and
the graphs' are as close (``test_graphs_are_as_close_to_float64_as_torch_is``); their difference
from torch reaches ~2e-5 there, and ~1.3e-5 on base and large (frames up to 3.9 and 4.8: 3e-6 of
their scale), whatever onnxruntime's graph optimisation level (measured at all, extended and basic).
"""

from __future__ import annotations

import copy
import json
import logging
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emotionq.errors import ConfigurationError
from emotionq.inference import EmotionModel, graphcache, group_windows, runtime, write_checkpoint
from emotionq.inference import export as export_module
from emotionq.inference.windows import window_bounds

THREADS = 2
TOLERANCE = 1e-5
LENGTHS_S = (0.5, 1.0, 2.5, 5.0, 12.3, 30.0)
BATCH_S = (30.0, 24.1, 12.3, 11.9, 5.0, 4.4, 1.0, 0.5, 0.45)  # padded passes of 2-3 windows each
FRAME = {"granularity": "frame", "embedding": True}


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """choose() sets torch to one thread where onnxruntime runs; the other modules' torch models want theirs."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def onnx_model(tiny_model_dir, onnx_cache):
    loaded = EmotionModel.load(str(tiny_model_dir), threads=THREADS, runtime="onnx", runtime_cache_dir=onnx_cache)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def speech30(long_speech):
    return long_speech[: 30 * 16000]


def cut(speech: np.ndarray, seconds: float) -> np.ndarray:
    return np.ascontiguousarray(speech[: int(seconds * 16000)])


def funasr_reference(funasr, samples: np.ndarray, window_s: float = 30.0) -> dict:
    """What funasr's generate gives one window at a time: per window scores, and all frames."""
    windows = []
    for a, b in window_bounds(samples.size, window_s):
        [frame] = funasr.generate(samples[a:b], granularity="frame", extract_embedding=True)
        windows.append({"scores": frame["scores"], "frames": frame["feats"]})
    return {"windows": windows, "frames": np.concatenate([w["frames"] for w in windows])}


def differences(result: dict, reference: dict) -> dict[str, float]:
    """Largest differences of a predict result (granularity=frame, embedding) from funasr's, and the frames' scale."""
    frames = np.asarray(result["frames"], dtype=np.float64)
    assert frames.shape == reference["frames"].shape
    worst = {"scores": 0.0}
    for window, theirs in zip(result["timeline"], reference["windows"], strict=True):
        worst["scores"] = max(worst["scores"], _diff(list(window["scores"].values()), theirs["scores"]))
    if len(reference["windows"]) == 1:
        worst["scores"] = max(worst["scores"], _diff(list(result["scores"].values()), reference["windows"][0]["scores"]))
    worst["embedding"] = _diff(result["embedding"], reference["frames"].mean(axis=0))
    worst["frames"] = _diff(frames, reference["frames"])
    worst["frames_scale"] = max(1.0, float(np.abs(reference["frames"]).max()))
    return worst


def assert_close(worst: dict[str, float]) -> None:
    assert worst["scores"] <= TOLERANCE, worst
    assert worst["embedding"] <= TOLERANCE, worst
    assert worst["frames"] <= TOLERANCE * worst["frames_scale"], worst


def _diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# -- the graphs against funasr ---------------------------------------------------------------------


def test_onnx_model_reports_its_runtime(onnx_model, speech30):
    assert onnx_model.runtime == "onnxruntime"
    assert onnx_model.info().runtime == "onnxruntime"
    assert "check passed" in onnx_model.runtime_note
    assert onnx_model.predict(cut(speech30, 2.0))["model"]["runtime"] == "onnxruntime"


@pytest.mark.parametrize("seconds", LENGTHS_S)
def test_graphs_match_funasr_at_every_length(onnx_model, funasr_model, speech30, seconds):
    samples = cut(speech30, seconds)
    result = onnx_model.predict(samples, **FRAME)
    assert_close(differences(result, funasr_reference(funasr_model, samples)))


def test_padded_batches_match_funasr(onnx_model, funasr_model, speech30):
    items = [cut(speech30[i * 3200:], s) for i, s in enumerate(BATCH_S)]  # different speech in each
    groups = group_windows([x.size for x in items], max_windows=16, max_samples=120 * 16000)
    assert len(groups) < len(items) and all(len({items[i].size for i in g}) == len(g) for g in groups)

    results = onnx_model.predict_batch(items, options=[FRAME] * len(items), max_batch_s=120)

    for samples, result in zip(items, results):
        assert_close(differences(result, funasr_reference(funasr_model, samples)))


def test_windows_of_long_audio_match_funasr(onnx_model, funasr_model, long_speech):
    samples = long_speech[: 65 * 16000]  # three windows of 21.7 s, scored as predict_batch scores them
    result = onnx_model.predict_batch([samples], options=[FRAME], max_batch_s=120)[0]
    assert len(result["timeline"]) == 3
    assert_close(differences(result, funasr_reference(funasr_model, samples)))


def test_graphs_are_as_close_to_float64_as_torch_is(onnx_model, funasr_model, speech30):
    """Why frames are compared relative to their scale: float32 torch is itself that far from the exact result."""
    exact = copy.deepcopy(funasr_model.model).double().eval()
    with torch.no_grad():
        source = F.layer_norm(torch.from_numpy(speech30).double(), (speech30.size,))[None]
        frames64 = exact.extract_features(source, padding_mask=None)["x"][0].numpy()
    [theirs] = funasr_model.generate(speech30, granularity="frame", extract_embedding=True)
    ours = np.asarray(onnx_model.predict(speech30, granularity="frame")["frames"])

    torch_error, onnx_error = _diff(theirs["feats"], frames64), _diff(ours, frames64)
    assert torch_error > 1e-6  # float32 rounding, not zero
    assert onnx_error <= 2 * torch_error, (onnx_error, torch_error)
    assert _diff(ours.mean(axis=0), frames64.mean(axis=0)) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["base", "large"])
def test_every_architecture_matches_funasr(arch, arch_dir, runtime_cache_dir, speech30):
    """fp32 graphs within float tolerance of funasr; then the int8 graphs (quantized from those, cached)
    within ``quantization.LIMITS`` of the same references: one funasr load and one export per architecture."""
    from funasr import AutoModel

    directory = arch_dir(arch)
    funasr = AutoModel(model=str(directory), device="cpu", disable_update=True, disable_pbar=True, ncpu=THREADS)
    items = [cut(speech30, 0.5), cut(speech30[16000:], 3.3), speech30, cut(speech30[8000:], 24.1)]
    references = [funasr_reference(funasr, samples) for samples in items]
    del funasr
    options = [FRAME] * len(items)
    for name in ("onnx", "onnx-int8"):
        model = EmotionModel.load(str(directory), threads=THREADS, runtime=name, runtime_cache_dir=runtime_cache_dir)
        try:
            assert model.runtime == {"onnx": "onnxruntime", "onnx-int8": "onnxruntime-int8"}[name], model.runtime_note
            results = model.predict_batch(items, options=options, max_batch_windows=16, max_batch_s=60)  # padded
            for result, reference in zip(results, references):
                if name == "onnx":
                    assert_close(differences(result, reference))
                else:
                    assert_int8_close(result, reference)
        finally:
            model.close()


def assert_int8_close(result: dict, reference: dict) -> None:
    """The int8 check's own limits: scores within 0.02, embedding cosine 0.99 (one window), and funasr's top
    label (``same_top_label``)."""
    from emotionq.inference.quantization import LIMITS, cosine

    from .test_quantization import same_top_label

    [window] = reference["windows"]
    scores, theirs = np.asarray(list(result["scores"].values())), np.asarray(window["scores"])
    assert same_top_label(scores, theirs)
    assert np.abs(scores - theirs).max() <= LIMITS["scores"]
    assert cosine(result["embedding"], reference["frames"].mean(axis=0)) >= LIMITS["cosine"]


# -- threads and weights ---------------------------------------------------------------------------


def test_onnxruntime_scores_one_window_a_pass_unless_asked(onnx_model, speech30, monkeypatch):
    """Padding never paid on onnxruntime (``model.MAX_BATCH_S``): by default each window has its pass."""
    passes = []
    features = onnx_model.engine.features
    monkeypatch.setattr(onnx_model.engine, "features", lambda sources: passes.append(len(sources)) or features(sources))
    items = [cut(speech30[i * 3200:], s) for i, s in enumerate((2.0, 1.9, 1.8, 1.7))]  # one padded pass on torch

    onnx_model.predict_batch(items)
    assert passes == [1, 1, 1, 1]
    passes.clear()
    onnx_model.predict_batch(items, max_batch_s=16)  # the caller's cap still batches
    assert passes == [4]



def test_threads_go_to_onnxruntime_and_torch_keeps_one(tiny_model_dir, onnx_cache):
    loaded = EmotionModel.load(str(tiny_model_dir), threads=THREADS, runtime="onnx", runtime_cache_dir=onnx_cache)
    try:
        assert torch.get_num_threads() == 1  # torch runs only the layer norm, mean and head beside it
        for session in loaded.engine.sessions:
            options = session.get_session_options()
            assert options.intra_op_num_threads == THREADS and options.inter_op_num_threads == 1
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    finally:
        loaded.close()


def test_torch_copies_of_the_graphs_weights_are_released(onnx_model, speech30):
    module = onnx_model.automodel.model
    assert all(p.numel() == 0 for p in module.blocks.parameters())
    assert all(p.numel() == 0 for p in module.modality_encoders.parameters())
    assert module.proj.weight.numel() > 0  # the head stays: torch scores the mean
    assert "released" in onnx_model.runtime_note
    assert onnx_model.embed_dim == 64 and onnx_model.device == "cpu"


# -- the cache ---------------------------------------------------------------------------------------


@pytest.fixture
def entry(tmp_path, model):
    """An empty cache entry for the tiny checkpoint (built from the torch model's module, which keeps its weights)."""
    return graphcache.cache_entry(tmp_path / "cache", model.model_id)


def test_graphs_are_exported_once_then_loaded_from_the_cache(model, entry):
    _, first = runtime.load_graphs(model.automodel.model, entry, threads=1)
    _, second = runtime.load_graphs(model.automodel.model, entry, threads=1)

    assert first.startswith("exported (none cached)") and second == "cached graphs"
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["key"] == graphcache.cache_key(model.automodel.model)
    assert set(manifest["files"]) == {"local.onnx", "context.onnx"}


@pytest.mark.parametrize("graph", ["local.onnx", "context.onnx"])
def test_a_corrupt_graph_is_rebuilt_not_used(model, entry, graph):
    runtime.load_graphs(model.automodel.model, entry, threads=1)
    good = (entry / graph).read_bytes()
    (entry / graph).write_bytes(b"garbage" * 1000)

    forward, how = runtime.load_graphs(model.automodel.model, entry, threads=1)

    assert how.startswith("exported (corrupt:"), how
    assert runtime.mismatch(runtime.check(model.automodel, forward)) is None
    assert (entry / graph).read_bytes() == good  # the export is deterministic: the same graph again


def test_garbage_that_matches_its_manifest_is_rebuilt_not_used(model, entry):
    """Caught when onnxruntime refuses it, even where the manifest's hash was made to match."""
    runtime.load_graphs(model.automodel.model, entry, threads=1)
    (entry / "context.onnx").write_bytes(b"garbage")
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["files"]["context.onnx"] = graphcache.sha256(entry / "context.onnx")
    (entry / "manifest.json").write_text(json.dumps(manifest))

    forward, how = runtime.load_graphs(model.automodel.model, entry, threads=1)

    assert how.startswith("exported (onnxruntime could not load the cached graphs"), how
    assert runtime.mismatch(runtime.check(model.automodel, forward)) is None


def test_a_truncated_build_is_rebuilt(model, entry):
    runtime.load_graphs(model.automodel.model, entry, threads=1)
    (entry / "manifest.json").unlink()  # what a build cut short leaves
    _, how = runtime.load_graphs(model.automodel.model, entry, threads=1)
    assert how.startswith("exported (none cached)")


def test_a_stale_key_is_rebuilt(model, entry, monkeypatch):
    runtime.load_graphs(model.automodel.model, entry, threads=1)
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["key"] = "0" * 64
    (entry / "manifest.json").write_text(json.dumps(manifest))

    _, how = runtime.load_graphs(model.automodel.model, entry, threads=1)
    assert how.startswith("exported (stale:"), how

    monkeypatch.setattr(export_module, "EXPORTER_VERSION", export_module.EXPORTER_VERSION + 1)
    _, how = runtime.load_graphs(model.automodel.model, entry, threads=1)
    assert how.startswith("exported (stale:"), how  # a new exporter: the old graphs are not used


def test_the_key_follows_the_weights_and_the_software(model, tmp_path, monkeypatch):
    other = EmotionModel.load(str(write_checkpoint(tmp_path / "seed1", arch="tiny", seed=1)), threads=1,
                              runtime="torch")
    try:
        key = graphcache.cache_key(model.automodel.model)
        assert graphcache.cache_key(other.automodel.model) != key
        assert graphcache.cache_key(model.automodel.model) == key
        monkeypatch.setattr(graphcache, "version", lambda name: "0.0" if name == "onnxruntime" else None)
        assert graphcache.cache_key(model.automodel.model) != key
    finally:
        other.close()


def test_a_cached_graph_that_fails_its_check_is_rebuilt(tiny_model_dir, tmp_path, model):
    """Graphs of other weights under this checkpoint's key and hashes: the check catches them at load."""
    cache = tmp_path / "cache"
    entry = graphcache.cache_entry(cache, str(tiny_model_dir))
    other = EmotionModel.load(str(write_checkpoint(tmp_path / "seed1", arch="tiny", seed=1)), threads=1,
                              runtime="torch")
    try:
        graphcache.write(entry, graphcache.cache_key(model.automodel.model),
                         lambda directory: export_module.export(other.automodel.model, directory))
    finally:
        other.close()
    wrong = (entry / "context.onnx").read_bytes()

    loaded = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="onnx", runtime_cache_dir=cache)
    try:
        assert loaded.runtime == "onnxruntime"
        assert "exported (rebuilt after failing its check)" in loaded.runtime_note
        assert (entry / "context.onnx").read_bytes() != wrong
    finally:
        loaded.close()


# -- choosing, and falling back -----------------------------------------------------------------------


def test_a_mismatch_falls_back_to_torch_with_the_reason_logged(tiny_model_dir, tmp_path, monkeypatch, caplog, speech30,
                                                               model):
    monkeypatch.setattr(export_module, "_alibi_slopes", lambda heads: torch.zeros(heads))  # a graph without ALiBi
    with caplog.at_level(logging.WARNING, logger="emotionq.inference.runtime"):
        loaded = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="onnx", runtime_cache_dir=tmp_path)
    try:
        assert loaded.runtime == "torch" and loaded.info().runtime == "torch"
        assert "do not match funasr on the probe" in loaded.runtime_note
        assert any("torch runs instead" in r.message and "differ by" in r.message for r in caplog.records)
        assert loaded.automodel.model.blocks[0].attn.qkv.weight.numel() > 0  # torch keeps its weights
        samples = cut(speech30, 2.0)
        assert loaded.predict(samples)["scores"] == pytest.approx(model.predict(samples)["scores"], abs=TOLERANCE)
    finally:
        loaded.close()


def test_without_onnxruntime_torch_runs(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    loaded = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="auto", runtime_cache_dir=tmp_path)
    try:
        assert loaded.runtime == "torch" and "cannot be imported" in loaded.runtime_note
    finally:
        loaded.close()


@pytest.mark.parametrize("faster", ["torch", "onnxruntime"])
def test_auto_takes_the_faster_runtime_that_passes_its_check(tiny_model_dir, tmp_path, monkeypatch, faster):
    times = {"torch": 2.0, "onnxruntime": 1.0} if faster == "onnxruntime" else {"torch": 1.0, "onnxruntime": 2.0}
    monkeypatch.setattr(runtime, "_time", lambda model, forward: times[forward.name if forward else "torch"])
    loaded = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="auto", runtime_cache_dir=tmp_path)
    try:
        assert loaded.runtime == faster
        assert "probe" in loaded.runtime_note
    finally:
        loaded.close()


def test_runtime_torch_exports_nothing(tiny_model_dir, tmp_path):
    loaded = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="torch", runtime_cache_dir=tmp_path)
    try:
        assert loaded.runtime == "torch" and loaded.runtime_note == "asked for"
        assert not any(tmp_path.iterdir())
    finally:
        loaded.close()


def test_an_unknown_runtime_is_a_configuration_error(tiny_model_dir):
    with pytest.raises(ConfigurationError, match="unknown runtime"):
        EmotionModel.load(str(tiny_model_dir), runtime="tensorrt")


def test_the_setting_chooses_the_runtime(monkeypatch):
    from pydantic import ValidationError

    from emotionq.settings import Settings

    assert Settings().runtime == "auto"
    monkeypatch.setenv("EMOTIONQ_RUNTIME", "torch")
    assert Settings().runtime == "torch"
    monkeypatch.setenv("EMOTIONQ_RUNTIME", "tensorrt")
    with pytest.raises(ValidationError):
        Settings()
