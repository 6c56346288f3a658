"""The int8 CPU runtime's graphs: onnxruntime's quantization of the exported fp32 graphs, and their check.

``quantize`` writes int8 copies of ``local.onnx`` and ``context.onnx`` (``emotionq.inference.export``)
following ``RECIPE``: onnxruntime's dynamic quantization, int8 weights per output channel on MatMul and
Gemm (the projections, attention and MLP), activations quantized per tensor as each pass runs; and, where
the model layer-norms its windows, static int8 convolutions in the conv feature encoder (all but the
first, on the waveform), their activation ranges calibrated on cuts of the probe speech. 7-bit weights
on x86 CPUs without VNNI (where full-range ones saturate onnxruntime's int16 sums). ``emotionq.inference.runtime`` caches them beside the fp32 graphs (the
recipe is in the cache key) and runs them with ``EMOTIONQ_RUNTIME=onnx-int8``.

Quantization changes the numbers, so the graphs are held to funasr's fp32 output by ``LIMITS`` rather
than float tolerance: on a probe of real speech (``probe.flac``, espeak-ng, made for this project) cut
to several lengths and scored in one padded batch, every item must keep funasr's top label, its nine
scores must stay within 0.02 and its embedding (the mean frame) at cosine 0.99 or more. On the random
checkpoints of ``emotion2vec checkpoint`` the int8 graphs stay well inside that (scores within ~2e-3,
cosine above 0.9999 on tiny, base and large); on a trained checkpoint the error can only be measured
on its own data: ``emotionq model compare`` scores a folder both ways.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from emotionq.inference import cpuinfo
from emotionq.inference.audio import SAMPLE_RATE


def _x86_without_vnni() -> bool:
    """An x86 CPU without VNNI (or an x86 whose flags cannot be read). There onnxruntime's u8s8 kernels sum
    pairs of products in int16 (``vpmaddubsw``), which saturates with full-range int8 weights: weights are
    then quantized to 7 bits (``reduce_range``)."""
    here = cpuinfo.cpu()
    return here.x86 and not (here.readable and here.vnni)


RECIPE = {"method": "dynamic", "weight_type": "int8", "per_channel": True, "op_types": ["MatMul", "Gemm"],
          "reduce_range": _x86_without_vnni(),
          # The conv feature encoder (local.onnx), where the model layer-norms its input (so its activations do not
          # scale with the recording's level): static int8 convs, QDQ, per channel, activation ranges from the
          # calibration cuts (min-max); the first conv, on the waveform itself, stays float.
          "convs": {"method": "static", "format": "QDQ", "calibration": "minmax", "skip_first": True},
          "version": 2}
CALIBRATION_CUTS_S = ((0.5, 1.0), (1.5, 2.4), (2.5, 1.2), (0.2, 4.0))  # (start, length) in probe.flac: not the check's cuts
LIMITS = {"scores": 0.02, "cosine": 0.99}
PROBE = Path(__file__).with_name("probe.flac")
PROBE_CUTS_S = ((0.0, 0.7), (1.0, 1.6), (2.0, 3.1), (3.0, 5.0), (0.0, None))  # (start, length): None = to the end


def cache_key(fp32_key: str) -> str:
    """The int8 graphs' key: the fp32 graphs' (weights and software) and the recipe."""
    return hashlib.sha256(json.dumps({"fp32": fp32_key, "recipe": RECIPE}, sort_keys=True).encode()).hexdigest()


def quantize(sources: dict[str, Path], directory: Path, *, normalized: bool) -> dict[str, Path]:
    """Int8 copies of the fp32 graphs ``sources`` (name -> path) in ``directory``, following ``RECIPE``;
    ``normalized``: the model layer-norms each window (its ``cfg.normalize``), so its convs are quantized too."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger()  # onnxruntime's quantizer logs on the root logger: a line per tensor, and advice
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))
    try:
        paths = {}
        for name, source in sources.items():
            paths[name] = Path(directory) / source.name
            if name == "local" and normalized:
                static = Path(directory) / f"{source.stem}.convs.onnx"
                _quantize_convs(source, static)
                source = static
            quantize_dynamic(str(source), str(paths[name]), per_channel=RECIPE["per_channel"],
                             reduce_range=RECIPE["reduce_range"], weight_type=QuantType.QInt8,
                             op_types_to_quantize=list(RECIPE["op_types"]))
            if source != sources[name]:
                source.unlink()
    finally:
        quiet.setLevel(level)
    return paths


def _quantize_convs(source: Path, target: Path) -> None:
    """``source`` (the conv feature encoder) with static int8 convs but the first, calibrated on ``CALIBRATION_CUTS_S``
    of the probe, layer-normed as the model's windows are."""
    import onnx
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from emotionq.inference.encoder import normalized

    feeds = iter([{"source": normalized(torch.from_numpy(window)).numpy()[None]} for window in _cuts(CALIBRATION_CUTS_S)])

    class Calibration(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    convs = [node.name for node in onnx.load(str(source), load_external_data=False).graph.node if node.op_type == "Conv"]
    quantize_static(str(source), str(target), Calibration(), quant_format=QuantFormat.QDQ,
                    per_channel=RECIPE["per_channel"], reduce_range=RECIPE["reduce_range"],
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, op_types_to_quantize=["Conv"],
                    nodes_to_exclude=convs[:1], calibrate_method=CalibrationMethod.MinMax)


def _cuts(cuts) -> list[np.ndarray]:
    """``cuts`` ((start, length) in seconds, length None: to the end) of ``probe.flac``, float32 speech at the models'
    sample rate."""
    import soundfile as sf

    speech, rate = sf.read(PROBE, dtype="float32")
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"{PROBE} is not {SAMPLE_RATE} Hz: reinstall emotionq")
    return [np.ascontiguousarray(speech[int(a * rate): None if n is None else int((a + n) * rate)]) for a, n in cuts]


def probe() -> list[np.ndarray]:
    """The probe windows: cuts of different lengths of ``probe.flac``."""
    return _cuts(PROBE_CUTS_S)


def check(automodel, runtime) -> dict:
    """How far ``runtime`` is from funasr's own fp32 ``generate`` (each window alone) on the probe, scored
    in one padded batch: the largest score difference, the lowest embedding cosine, items whose top label
    differs."""
    from emotionq.inference.encoder import score_windows

    windows = probe()
    ours = score_windows(automodel.model, runtime, windows, [False] * len(windows))
    worst = {"scores": 0.0, "cosine": 1.0, "labels_differ": 0, "items": len(windows)}
    for window, got in zip(windows, ours):
        [ref] = automodel.generate(window, granularity="utterance", extract_embedding=True)
        theirs = np.asarray(ref["scores"], dtype=np.float64)
        scores = np.asarray(got["scores"], dtype=np.float64)
        mine = got["mean"][0].double().numpy()
        embedding = np.asarray(ref["feats"], dtype=np.float64).reshape(-1)
        worst["scores"] = max(worst["scores"], float(np.abs(scores - theirs).max()))
        worst["cosine"] = min(worst["cosine"], cosine(mine, embedding))
        worst["labels_differ"] += int(np.argmax(scores) != np.argmax(theirs))
    return worst


def mismatch(worst: dict) -> str | None:
    """Why ``check``'s figures are outside ``LIMITS``, or None."""
    over = []
    if worst["labels_differ"]:
        over.append(f"the top label differs on {worst['labels_differ']} of {worst['items']} probe items")
    if not worst["scores"] <= LIMITS["scores"]:
        over.append(f"scores differ by {worst['scores']:.3f} (limit {LIMITS['scores']})")
    if not worst["cosine"] >= LIMITS["cosine"]:
        over.append(f"embedding cosine {worst['cosine']:.4f} (limit {LIMITS['cosine']})")
    return "; ".join(over) or None


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm else float(np.array_equal(a, b))


def agreement(fp32: list[dict], int8: list[dict]) -> dict:
    """How far int8 results are from fp32 results of the same recordings (``predict`` results, with embeddings):
    per pair the top labels, the largest score difference and the embedding cosine; and over all of them."""
    pairs = []
    for a, b in zip(fp32, int8, strict=True):
        diff = max(abs(a["scores"][k] - b["scores"][k]) for k in a["scores"])
        pairs.append({"fp32": a["top_label"], "int8": b["top_label"], "max_score_diff": diff,
                      "cosine": cosine(a["embedding"], b["embedding"])})
    same = sum(p["fp32"] == p["int8"] for p in pairs)
    return {"items": len(pairs), "same_top_label": same,
            "max_score_diff": max((p["max_score_diff"] for p in pairs), default=0.0),
            "mean_max_score_diff": float(np.mean([p["max_score_diff"] for p in pairs])) if pairs else 0.0,
            "min_cosine": min((p["cosine"] for p in pairs), default=1.0), "pairs": pairs}
