"""emotionq.inference.quantization and the onnx-int8 runtime: fidelity to funasr's fp32 output, the cache,
and the check at load (a corrupt or mismatching int8 graph is never served: fp32 graphs run instead).

Fidelity bounds are the check's own (``quantization.LIMITS``): the same top label, scores within 0.02,
embedding cosine 0.99 or more, here on speech other than the probe's, one window at a time and in padded
batches.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from emotionq.inference import EmotionModel, graphcache, quantization, runtime, write_checkpoint
from emotionq.inference.export import export

THREADS = 2
LENGTHS_S = (0.6, 2.2, 4.0, 7.5, 12.0)


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("int8")


@pytest.fixture(scope="module")
def int8_model(tiny_model_dir, int8_cache):
    loaded = EmotionModel.load(str(tiny_model_dir), threads=THREADS, runtime="onnx-int8", runtime_cache_dir=int8_cache)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def other_fp32(tiny_model_dir, tmp_path_factory):
    """The fp32 graphs of another tiny checkpoint (seed 1): quantized in this checkpoint's place, they must fail."""
    directory = tmp_path_factory.mktemp("seed1")
    other = EmotionModel.load(str(write_checkpoint(directory / "model", arch="tiny", seed=1)), threads=1,
                              runtime="torch")
    entry = directory / "graphs"
    try:
        graphcache.write(entry, "other", lambda directory: export(other.automodel.model, directory))
    finally:
        other.close()
    return graphcache.paths(entry)


def items_of(speech: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(speech[int(i * 8000): int(i * 8000 + s * 16000)]) for i, s in enumerate(LENGTHS_S)]


def same_top_label(scores: np.ndarray, theirs: np.ndarray) -> bool:
    """funasr's top label, unless funasr's own top two are a tie within the scores' difference: random weights
    give near-uniform scores, and base once had its top two 1.1e-3 apart where int8 moved scores by 1.8e-3.
    (The check at load allows no such tie: a probe item whose top label moves rejects the int8 graphs.)"""
    ours = int(np.argmax(scores))
    return ours == int(np.argmax(theirs)) or theirs.max() - theirs[ours] <= np.abs(scores - theirs).max()


def assert_within_limits(results: list[dict], references: list[dict]) -> None:
    for result, ref in zip(results, references, strict=True):
        scores = np.asarray(list(result["scores"].values()))
        theirs = np.asarray(ref["scores"])
        assert same_top_label(scores, theirs)
        assert np.abs(scores - theirs).max() <= quantization.LIMITS["scores"]
        assert quantization.cosine(result["embedding"], np.asarray(ref["feats"]).reshape(-1)) >= \
            quantization.LIMITS["cosine"]


def fp32_references(funasr, items: list[np.ndarray]) -> list[dict]:
    return [funasr.generate(x, granularity="utterance", extract_embedding=True)[0] for x in items]


# -- the int8 graphs ---------------------------------------------------------------------------------


def test_int8_runs_and_results_say_so(int8_model, long_speech):
    info = int8_model.info()
    assert (info.runtime, info.dtype) == ("onnxruntime-int8", "int8"), info.runtime_note
    assert "int8 quantized (none cached)" in info.runtime_note and "check passed" in info.runtime_note
    assert int8_model.predict(long_speech[:32000])["model"]["runtime"] == "onnxruntime-int8"


def test_the_int8_graphs_are_quantized(tiny_model_dir, int8_cache, int8_model):
    import onnx

    entry = runtime.int8_entry(graphcache.cache_entry(int8_cache, str(tiny_model_dir)))
    ops = {node.op_type for node in onnx.load(str(entry / "context.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops and "MatMul" in ops  # attention's own matmuls stay
    assert quantized_convs(entry / "local.onnx") == (["float"] + ["int8"] * 6)  # all but the waveform's conv


def test_a_model_that_does_not_normalize_its_input_keeps_float_convs(other_fp32, tmp_path):
    """Without the layer norm of each window, conv activations scale with the recording's level: ranges
    calibrated on the probe would clip loud audio, so only the dynamic MatMul/Gemm recipe applies."""
    paths = quantization.quantize(other_fp32, tmp_path, normalized=False)
    assert quantized_convs(paths["local"]) == ["float"] * 7


def quantized_convs(path) -> list[str]:
    """Each Conv of a graph, in order: "int8" where its weight comes through a DequantizeLinear (QDQ), else "float"."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return ["int8" if node.input[1] in dequantized else "float" for node in graph.node if node.op_type == "Conv"]


def test_int8_stays_within_the_limits_of_funasr_fp32(int8_model, funasr_model, long_speech):
    items = items_of(long_speech[16000 * 20:])  # other speech than the probe's
    references = fp32_references(funasr_model, items)
    alone = [int8_model.predict(x, embedding=True) for x in items]
    batched = int8_model.predict_batch(items, options=[{"embedding": True}] * len(items), max_batch_s=60)
    assert_within_limits(alone, references)
    assert_within_limits(batched, references)


def test_quantized_graphs_are_cached_under_the_recipe(tiny_model_dir, int8_cache, int8_model, monkeypatch):
    again = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="onnx-int8", runtime_cache_dir=int8_cache)
    try:
        assert again.runtime == "onnxruntime-int8" and again.runtime_note.startswith("int8 cached graphs")
    finally:
        again.close()
    key = quantization.cache_key("fp32 key")
    assert quantization.cache_key("other fp32 key") != key
    monkeypatch.setitem(quantization.RECIPE, "per_channel", False)
    assert quantization.cache_key("fp32 key") != key  # another recipe: the cached int8 graphs are not used


# -- never served: corrupt, mismatching ---------------------------------------------------------------


def test_a_corrupt_cached_int8_graph_is_never_served(tiny_model_dir, int8_cache, int8_model, caplog):
    entry = runtime.int8_entry(graphcache.cache_entry(int8_cache, str(tiny_model_dir)))
    (entry / "context.onnx").write_bytes(b"garbage" * 100)

    loaded = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="onnx-int8", runtime_cache_dir=int8_cache)
    try:
        assert loaded.runtime == "onnxruntime-int8"
        assert "int8 quantized (corrupt: context.onnx does not match its manifest)" in loaded.runtime_note
        assert (entry / "context.onnx").read_bytes() != b"garbage" * 100
    finally:
        loaded.close()

    # garbage whose hash was written into the manifest: onnxruntime refuses it, and it is quantized again
    (entry / "local.onnx").write_bytes(b"garbage")
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["files"]["local.onnx"] = graphcache.sha256(entry / "local.onnx")
    (entry / "manifest.json").write_text(json.dumps(manifest))
    loaded = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="onnx-int8", runtime_cache_dir=int8_cache)
    try:
        assert loaded.runtime == "onnxruntime-int8"
        assert "int8 quantized (onnxruntime could not load the cached graphs" in loaded.runtime_note
    finally:
        loaded.close()


def test_int8_graphs_that_fail_the_check_fall_back_to_fp32(tiny_model_dir, tmp_path, monkeypatch, caplog, other_fp32,
                                                           long_speech, model):
    real = quantization.quantize
    monkeypatch.setattr(quantization, "quantize", lambda sources, directory, **kw: real(other_fp32, directory, **kw))
    with caplog.at_level(logging.WARNING, logger="emotionq.inference.runtime"):
        loaded = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="onnx-int8", runtime_cache_dir=tmp_path)
    try:
        assert (loaded.runtime, loaded.dtype) == ("onnxruntime", "float32")
        assert loaded.runtime_note.startswith("int8 failed, fp32 graphs run: RuntimeError: the int8 graphs do not "
                                              "match funasr's fp32 output"), loaded.runtime_note
        assert any("the fp32 graphs run instead" in r.message for r in caplog.records)
        samples = long_speech[:48000]
        assert loaded.predict(samples)["scores"] == pytest.approx(model.predict(samples)["scores"], abs=1e-5)
    finally:
        loaded.close()


def test_a_cached_int8_graph_that_fails_the_check_is_quantized_again(tiny_model_dir, tmp_path, other_fp32, model):
    entry = graphcache.cache_entry(tmp_path, str(tiny_model_dir))
    key = graphcache.cache_key(model.automodel.model)
    graphcache.write(runtime.int8_entry(entry), quantization.cache_key(key),
                   lambda directory: quantization.quantize(other_fp32, directory, normalized=True))  # other weights, this key

    loaded = EmotionModel.load(str(tiny_model_dir), threads=1, runtime="onnx-int8", runtime_cache_dir=tmp_path)
    try:
        assert loaded.runtime == "onnxruntime-int8"
        assert loaded.runtime_note.startswith("int8 quantized (rebuilt after failing its check)"), loaded.runtime_note
    finally:
        loaded.close()


def test_the_setting_takes_onnx_int8(monkeypatch):
    from emotionq.settings import Settings

    monkeypatch.setenv("EMOTIONQ_RUNTIME", "onnx-int8")
    assert Settings().runtime == "onnx-int8"


# base and large: tests/inference/test_runtime.py::test_every_architecture_matches_funasr (fp32, then int8)


# -- checking a trained model on one's own data --------------------------------------------------------


def test_model_compare_scores_a_folder_both_ways(tiny_model_dir, int8_cache, int8_model, tmp_path, long_speech):
    import soundfile as sf
    from click.testing import CliRunner

    from emotionq.cli.admin import model_compare

    for k, seconds in enumerate((1.5, 6.0)):
        sf.write(tmp_path / f"clip{k}.wav", long_speech[k * 16000: int((k + seconds) * 16000)], 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    out = CliRunner().invoke(model_compare, [str(tmp_path), "--model", str(tiny_model_dir), "--threads", "1"],
                             env={"EMOTIONQ_RUNTIME_CACHE_DIR": str(int8_cache)})
    assert out.exit_code == 0, out.output
    assert "notes.txt: skipped" in out.output
    assert "clip0.wav: fp32 " in out.output and "clip1.wav: fp32 " in out.output
    assert "top label agrees on 2 of 2 recordings (100.0%)" in out.output


def test_agreement_counts_what_differs():
    a = {"scores": {"happy": 0.6, "sad": 0.4}, "top_label": "happy", "embedding": [1.0, 0.0]}
    b = {"scores": {"happy": 0.45, "sad": 0.55}, "top_label": "sad", "embedding": [0.0, 1.0]}
    found = quantization.agreement([a, a], [a, b])
    assert (found["items"], found["same_top_label"]) == (2, 1)
    assert found["max_score_diff"] == pytest.approx(0.15) and found["min_cosine"] == pytest.approx(0.0)
