"""GPU: autocast vs fp32, a batch-size sweep with GPU memory, and fixed-shape CUDA graphs / torch.compile.

In ``make bench`` it runs only where CUDA is (large checkpoint, mixed speech clips). On a bare GPU
machine ``scripts/gpu-check`` runs it alone, ``python -m benchmarks.gpu``: a random large checkpoint,
synthetic clips, no servers, nothing from benchmarks.common (which needs Redis and RabbitMQ clients).

- autocast (bf16 where supported, else fp16: what the worker uses) vs fp32 on the same weights: clips/s
  of a predict loop over mixed clips and the largest score difference. fp32 is the same weights run by
  a ``TorchRuntime`` without autocast (``EmotionModel.using``).
- ``predict_batch`` on the mixed clips as the worker calls it (its defaults) vs the predict loop.
- batch sweep: ``sweep_n`` clips of ``sweep_s`` s each (equal lengths, so a pass holds exactly B
  windows), ``predict_batch(max_batch_windows=B)`` for B in ``BATCH_WINDOWS``: clips/s, the largest
  score difference from one at a time, and the GPU memory peak (``torch.cuda.max_memory_allocated``).
- fixed shapes (``fixed_shapes``): one unpadded batch through funasr's ``extract_features`` under
  autocast, eager vs a captured CUDA graph replayed vs ``torch.compile``: batches/s, compile time,
  largest frame difference from eager.
- precisions (``precisions``): bf16 (where the GPU has it) and fp16 autocast each against fp32 on the same
  weights and clips: clips/s, the largest score difference, the lowest embedding cosine, top labels kept.
- the speaker encoder (``speaker_encoder``): resemblyzer's GE2E LSTM embedding the 1.5 s windows the
  diarizer takes every 0.5 s, on the device vs the CPU: windows/s and the largest embedding difference.
- SenseVoice (``sensevoice``): SenseVoiceSmall (float32 torch, as the worker runs it) over the same mixed
  clips, seconds per audio second, beside emotion2vec's ``predict_batch`` on them.
Standalone, the rows come per model the worker loads (``FAMILIES``: emotion2vec, the speaker encoder and
SenseVoice, a function each, which loads its model, returns its rows and writes its details).
``measure``, ``precisions``, ``fixed_shapes`` and ``sensevoice`` run on any loaded model: tests/test_benchmarks.py runs them on the CPU
(no autocast, no CUDA graph, torch.compile with the ``eager`` backend), so this code is checked where
no GPU is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks.rows import Row, print_table

NAME = "gpu"
BATCH_WINDOWS = (1, 4, 8, 16, 32)
CLIP_LENGTHS_S = (1, 15, 4, 8, 2, 12, 6, 10, 3, 14, 5, 9)  # benchmarks.common.MIXED_LENGTHS_S (mean 7.4 s)
SWEEP_N, SWEEP_S = 64, 5.0
FIXED_BATCH, FIXED_S = 8, 5.0


def run(ctx) -> list[Row]:
    import torch

    if not torch.cuda.is_available():
        return [Row(NAME, "autocast, batch sweep, fixed shapes", None, notes="skipped: no CUDA")]
    from benchmarks.common import checkpoint, distinct_clips, mixed_lengths
    from emotionq.inference import EmotionModel
    from emotionq.inference.audio import decode

    paths = distinct_clips(ctx.workdir(NAME), mixed_lengths(8 if ctx.quick else 32))
    clips = [decode(p) for p in paths]
    model = EmotionModel.load(str(checkpoint("large")), device="cuda")
    try:
        detail = ctx.detail(NAME)
        return (measure(model, clips, detail, sweep_n=16 if ctx.quick else SWEEP_N) + precisions(model, clips, detail)
                + fixed_shapes(model, detail) + sensevoice(model, checkpoint("sensevoice-small"), clips, detail)
                + speaker_encoder(detail, device="cuda"))
    finally:
        model.close()


def measure(model, clips: list, detail: dict, *, sweep_n: int = SWEEP_N, sweep_s: float = SWEEP_S) -> list[Row]:
    n = len(clips)
    from emotionq.inference.encoder import TorchRuntime

    dtype = model.engine.autocast_dtype
    label = str(dtype).removeprefix("torch.") if dtype is not None else "no"
    amp_s, amp = _timed(lambda: [model.predict(c) for c in clips], model)
    full = model.using(TorchRuntime(model.automodel.model, autocast_dtype=None))
    fp32_s, fp32 = _timed(lambda: [full.predict(c) for c in clips], model)
    diff = _max_diff(amp, fp32)
    detail.update(clips=n, autocast=str(dtype), autocast_s=amp_s, fp32_s=fp32_s, max_score_diff=diff)
    rows = [Row(NAME, f"{label} autocast clips/s", n / amp_s, "clips/s", n / fp32_s, "fp32",
                notes=f"{n} mixed clips; max |score diff| {diff:.2e}")]

    took, out = _timed(lambda: model.predict_batch(clips), model)
    _raise_errors(out)
    detail["predict_batch_defaults"] = {"s": took, "max_score_diff_vs_predict": _max_diff(amp, out)}
    rows.append(Row(NAME, "predict_batch clips/s, worker defaults", n / took, "clips/s", n / amp_s,
                    "predict loop, autocast", notes=f"max |score diff| vs predict {_max_diff(amp, out):.2e}"))

    rng = np.random.default_rng(0)
    sweep = [(rng.standard_normal(int(sweep_s * 16000)) * 0.1).astype(np.float32) for _ in range(sweep_n)]
    alone_s, alone = None, None
    for windows in BATCH_WINDOWS:
        _reset_peak(model)
        took, out = _timed(lambda: model.predict_batch(sweep, max_batch_windows=windows,
                                                       max_batch_s=windows * sweep_s + 1), model)
        _raise_errors(out)
        if alone is None:
            alone_s, alone = took, out
        peak = _peak_mb(model)
        diff = _max_diff(alone, out)
        detail[f"batch_{windows}"] = {"s": took, "clips_per_s": sweep_n / took, "gpu_peak_mb": peak,
                                      "max_score_diff_vs_batch_1": diff}
        rows.append(Row(NAME, f"sweep clips/s, {windows} windows per pass", sweep_n / took, "clips/s",
                        sweep_n / alone_s, "1 window per pass",
                        notes=f"{sweep_n} clips of {sweep_s:g} s; GPU peak "
                              + (f"{peak:,.0f} MB" if peak is not None else "- (no CUDA)")
                              + f"; max |score diff| vs 1 window {diff:.2e}"))
    return rows


def precisions(model, clips: list, detail: dict) -> list[Row]:
    """bf16 and fp16 autocast against fp32 on the same weights (``TorchRuntime`` at each dtype): clips/s and
    how far the results move (largest score difference, lowest embedding cosine, top labels kept)."""
    import torch

    from emotionq.inference.encoder import TorchRuntime

    module = model.automodel.model
    fp32_s, fp32 = _timed(lambda: [model.using(TorchRuntime(module)).predict(c, embedding=True) for c in clips], model)
    dtypes = [torch.float16]
    if not model.device.startswith("cuda") or torch.cuda.is_bf16_supported():
        dtypes.insert(0, torch.bfloat16)
    rows = []
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")
        low = model.using(TorchRuntime(module, autocast_dtype=dtype))
        took, out = _timed(lambda: [low.predict(c, embedding=True) for c in clips], model)
        diff = _max_diff(fp32, out)
        cos = min(_cosine(a["embedding"], b["embedding"]) for a, b in zip(fp32, out))
        kept = sum(a["top_label"] == b["top_label"] for a, b in zip(fp32, out))
        detail[f"precision_{name}"] = {"s": took, "fp32_s": fp32_s, "max_score_diff": diff, "min_cosine": cos,
                                       "top_label_kept": kept, "clips": len(clips)}
        rows.append(Row(NAME, f"emotion2vec {name} autocast clips/s", len(clips) / took, "clips/s",
                        len(clips) / fp32_s, "fp32, same weights",
                        notes=f"max |score diff| vs fp32 {diff:.2e}; embedding cosine >= {cos:.5f}; top label kept "
                              f"{kept}/{len(clips)}" + ("" if model.device.startswith("cuda") else "; no CUDA: "
                                                         "autocast is off, so this is fp32 again")))
    return rows


def fixed_shapes(model, detail: dict, *, batch: int = FIXED_BATCH, seconds: float = FIXED_S,
                 compile_backend: str = "inductor", compile_mode: str | None = "max-autotune-no-cudagraphs",
                 runs: int = 10) -> list[Row]:
    """Eager vs CUDA graph replay vs torch.compile on one fixed (batch, seconds) shape; failures become notes."""
    import torch
    import torch.nn.functional as F

    module = model.automodel.model
    device = next(module.parameters()).device
    rng = np.random.default_rng(1)
    samples = torch.from_numpy((rng.standard_normal((batch, int(seconds * 16000))) * 0.1).astype(np.float32))
    source = F.layer_norm(samples, samples.shape[-1:]).to(device)  # each row layer-normed, as _forward does
    shape = f"{batch} x {seconds:g} s"

    def forward():
        with torch.no_grad(), model.engine.autocast(device):
            return module.extract_features(source, padding_mask=None)["x"]

    eager_s, reference = _best(forward, runs, device)
    out = {"eager_s": eager_s}
    rows = []

    if device.type == "cuda":
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up: funasr's ALiBi cache reaches this length outside the capture
                    forward()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                captured = forward()

            def replay():
                graph.replay()
                return captured

            graph_s, frames = _best(replay, runs, device)
            diff = float((frames.float() - reference.float()).abs().max())
            out.update(cuda_graph_s=graph_s, cuda_graph_max_frame_diff=diff)
            rows.append(Row(NAME, f"fixed {shape}, CUDA graph replay", 1 / graph_s, "batches/s", 1 / eager_s,
                            "eager", notes=f"max |frame diff| vs eager {diff:.2e}"))
        except Exception as exc:  # noqa: BLE001 - report what failed, measure the rest
            out["cuda_graph_error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(Row(NAME, f"fixed {shape}, CUDA graph replay", None, notes=f"failed: {out['cuda_graph_error']}"))
    else:
        rows.append(Row(NAME, f"fixed {shape}, CUDA graph replay", None, notes="skipped: no CUDA"))

    try:
        import torch._dynamo

        torch._dynamo.reset()
        compiled = torch.compile(forward, backend=compile_backend, mode=compile_mode if compile_backend == "inductor"
                                 else None, dynamic=False)
        began = time.perf_counter()
        compiled()
        _sync(device)
        compile_s = time.perf_counter() - began
        compiled_s, frames = _best(compiled, runs, device)
        diff = float((frames.float() - reference.float()).abs().max())
        out.update(compile_s=compile_s, compiled_s=compiled_s, compiled_max_frame_diff=diff)
        rows.append(Row(NAME, f"fixed {shape}, torch.compile ({compile_backend}, {compile_mode})", 1 / compiled_s,
                        "batches/s", 1 / eager_s, "eager",
                        notes=f"compiled in {compile_s:.0f} s; max |frame diff| vs eager {diff:.2e}"))
    except Exception as exc:  # noqa: BLE001
        out["compile_error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(Row(NAME, f"fixed {shape}, torch.compile ({compile_backend})", None,
                        notes=f"failed: {out['compile_error']}"))
    detail["fixed_shapes"] = out
    return rows


# -- helpers -----------------------------------------------------------------------------------------


def sensevoice(model, sv_dir, clips: list, detail: dict) -> list[Row]:
    """SenseVoice's seconds per audio second on ``clips`` (best of 2, on the emotion model's device) beside
    the emotion model's ``predict_batch`` on them."""
    import torch

    from emotionq.inference.sensevoice import SenseVoiceModel

    device = model.info().device
    sv = SenseVoiceModel.load(str(sv_dir), device=device)
    try:
        audio_s = sum(c.size for c in clips) / 16000
        sv_s, _ = _best(lambda: _raise_errors(sv.predict_batch(clips)), 2, torch.device(device))
        e2v_s, _ = _best(lambda: _raise_errors(model.predict_batch(clips)), 2, torch.device(device))
    finally:
        sv.close()
    detail["sensevoice"] = {"checkpoint": str(sv_dir), "audio_s": audio_s, "sensevoice_s": sv_s, "emotion2vec_s": e2v_s}
    return [Row(NAME, "SenseVoice s per audio second", sv_s / audio_s, "s/s", e2v_s / audio_s, "emotion2vec",
                notes=f"{len(clips)} clips, {audio_s:.0f} s; SenseVoice float32 torch on {device}")]


def speaker_encoder(detail: dict, *, device: str, seconds: float = 120.0, runs: int = 3) -> list[Row]:
    """The diarizer's windows of ``seconds`` of audio embedded on ``device`` and on the CPU (best of ``runs``)."""
    from emotionq.errors import ConfigurationError
    from emotionq.inference import speakers

    metric = f"speaker encoder windows/s ({seconds:.0f} s of audio)"
    try:
        on_device, on_cpu = speakers.SpeakerEncoder(device), speakers.SpeakerEncoder("cpu")
    except ConfigurationError as exc:
        return [Row(NAME, metric, None, notes=f"skipped: {exc.message} (scripts/gpu-wheels fetches it)")]
    samples = (np.random.default_rng(3).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    mel = on_cpu.mel(samples)
    windows = [mel[a // speakers.HOP : b // speakers.HOP] for a, b in speakers._windows([(0, samples.size)])]
    took, got = {}, {}
    for name, encoder in (("device", on_device), ("cpu", on_cpu)):
        encoder.embed(windows[:2])  # warm: kernels, allocator
        best = float("inf")
        for _ in range(runs):
            began = time.perf_counter()
            got[name] = encoder.embed(windows)
            best = min(best, time.perf_counter() - began)
        took[name] = best
    diff = float(np.abs(got["device"] - got["cpu"]).max())
    detail["speaker_encoder"] = {"windows": len(windows), "device_s": took["device"], "cpu_s": took["cpu"],
                                 "max_embedding_diff": diff}
    return [Row(NAME, metric, len(windows) / took["device"], "windows/s", len(windows) / took["cpu"], "CPU",
                notes=f"{device}; largest embedding difference {diff:.1e}")]


def _timed(fn, model) -> tuple[float, list]:
    fn()  # warm-up
    _sync_model(model)
    started = time.perf_counter()
    out = fn()
    _sync_model(model)
    return time.perf_counter() - started, out


def _best(fn, runs: int, device):
    fn()
    _sync(device)
    best, out = float("inf"), None
    for _ in range(runs):
        began = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - began)
    return best, out


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sync_model(model) -> None:
    import torch

    _sync(torch.device(model.device))


def _reset_peak(model) -> None:
    import torch

    if model.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(model.device)


def _peak_mb(model) -> float | None:
    import torch

    if not model.device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated(model.device) / 2**20


def _cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _max_diff(a: list[dict], b: list) -> float:
    return max(abs(x["scores"][k] - y["scores"][k]) for x, y in zip(a, b) for k in x["scores"])


def _raise_errors(out: list) -> None:
    errors = [o for o in out if isinstance(o, Exception)]
    if errors:
        raise RuntimeError(f"predict_batch failed {len(errors)} of {len(out)} clips: {errors[0]!r}")


def emotion2vec_rows(args, tmp: str, detail: dict, started: float) -> list[Row]:
    """The emotion model: a random checkpoint (or ``--model``) on the device; autocast, sweep, precisions, fixed shapes."""
    from emotionq.inference import EmotionModel, write_checkpoint

    directory = args.model or str(write_checkpoint(os.path.join(tmp, args.arch), arch=args.arch))
    _say(f"checkpoint ready in {time.perf_counter() - started:.0f} s")
    model = EmotionModel.load(directory, device=args.device, runtime="torch")
    try:
        _say(f"{model.info()} loaded at {time.perf_counter() - started:.0f} s")
        clips = speech_clips([1.0, 2.0] if args.quick else CLIP_LENGTHS_S, 4 if args.quick else 32)
        sizes = {"sweep_n": 8, "sweep_s": 1.0} if args.quick else {}
        rows = measure(model, clips, detail, **sizes)
        rows += precisions(model, clips, detail)
        _say(f"autocast, sweep and precisions done at {time.perf_counter() - started:.0f} s")
        sizes = {"batch": 2, "seconds": 1.0, "runs": 2, "compile_backend": "eager"} if args.quick else {}
        return rows + fixed_shapes(model, detail, **sizes)
    finally:
        model.close()


def speaker_encoder_rows(args, tmp: str, detail: dict, started: float) -> list[Row]:
    """The diarizer's speaker encoder on the device vs the CPU."""
    rows = speaker_encoder(detail, device=args.device, seconds=10.0 if args.quick else 120.0)
    _say(f"speaker encoder done at {time.perf_counter() - started:.0f} s")
    return rows


def sensevoice_rows(args, tmp: str, detail: dict, started: float) -> list[Row]:
    """SenseVoice (a random checkpoint of the size that goes with ``--arch``) beside the emotion model
    ``emotion2vec_rows`` wrote, on the same speech clips."""
    if args.no_sensevoice:
        return []
    from emotionq.inference import EmotionModel, write_checkpoint
    from emotionq.inference.sensevoice_checkpoint import write_sensevoice

    directory = args.model or os.path.join(tmp, args.arch)
    if not os.path.isdir(directory):
        directory = str(write_checkpoint(directory, arch=args.arch))
    sv_arch = "sensevoice-tiny" if args.arch == "tiny" else "sensevoice-small"
    sv_dir = write_sensevoice(os.path.join(tmp, sv_arch), arch=sv_arch)
    model = EmotionModel.load(directory, device=args.device, runtime="torch")
    try:
        clips = speech_clips([1.0, 2.0] if args.quick else CLIP_LENGTHS_S, 4 if args.quick else 32)
        rows = sensevoice(model, sv_dir, clips, detail)
    finally:
        model.close()
    _say(f"SenseVoice done at {time.perf_counter() - started:.0f} s")
    return rows


# Rows per model the worker loads, in the order they run: name -> rows_of(args, tmp, detail, started).
FAMILIES = {"emotion2vec": emotion2vec_rows, "speaker encoder": speaker_encoder_rows, "sensevoice": sensevoice_rows}


def speech_clips(lengths, count: int) -> list:
    """``count`` clips of real speech (the probe emotionq ships, espeak-ng), of ``lengths`` seconds in turn."""
    import soundfile as sf

    from emotionq.inference.quantization import PROBE

    speech, _ = sf.read(PROBE, dtype="float32")
    clips = []
    for i in range(count):
        n = int(lengths[i % len(lengths)] * 16000)
        tiled = np.tile(np.roll(speech, -i * 4000), n // speech.size + 1)
        clips.append(np.ascontiguousarray(tiled[:n]))
    return clips


def _say(text: str) -> None:
    print(f"benchmarks.gpu: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Standalone (scripts/gpu-check): write a random checkpoint, load it on CUDA, print the rows, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="large", help="checkpoint architecture (tiny, base, large)")
    parser.add_argument("--model", help="an existing model directory instead of a random checkpoint")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to try this script without a GPU")
    parser.add_argument("--quick", action="store_true", help="a few short clips, torch.compile's eager backend: "
                        "a smoke run of the code, not figures")
    parser.add_argument("--out", help="write the rows and details as JSON here")
    parser.add_argument("--no-sensevoice", action="store_true", help="skip the SenseVoice row")
    args = parser.parse_args(argv)

    import tempfile

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"benchmarks.gpu: torch {torch.__version__} sees no CUDA device: run it on a GPU machine "
              "(or --device cpu to try it)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    detail: dict = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
                    "torch": torch.__version__}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, rows_of in FAMILIES.items():
            try:
                rows += rows_of(args, tmp, detail, started)
            except Exception as exc:  # noqa: BLE001 - one model's failure is a row; the others still run
                rows.append(Row(NAME, f"{family}", None, notes=f"failed: {type(exc).__name__}: {exc}"[:300]))
                detail[f"{family}_error"] = f"{type(exc).__name__}: {exc}"
    detail["elapsed_s"] = time.perf_counter() - started
    print_table(rows)
    print(f"benchmarks.gpu: {detail['elapsed_s']:.0f} s in all on {detail['device']}", file=sys.stderr)
    if args.out:
        from dataclasses import asdict

        with open(args.out, "w") as f:
            json.dump({"rows": [asdict(r) for r in rows], "details": detail}, f, indent=2, default=str)
    return 1 if any(key.endswith("_error") for key in detail) else 0


if __name__ == "__main__":
    sys.exit(main())
