"""GPU only (skipped without CUDA): autocast vs fp32, and predict_batch's batch-size sweep.

Large checkpoint, mixed clips decoded beforehand, one warm-up pass per variant.
- autocast (bf16 where supported, else fp16: what the worker uses) vs fp32 on the same weights:
  clips/s and the largest score difference. fp32 is had by clearing ``EmotionModel._autocast_dtype``
  (private; the benchmark's only way to compare both on one loaded model).
- ``predict_batch(clips, max_batch_windows=B)`` for B in 1..16 vs a ``predict`` loop (autocast).
``measure`` runs on any loaded model: tests/test_benchmarks.py runs it on the CPU, so that this
section's code is checked where no GPU is.
"""

from __future__ import annotations

import time

from benchmarks.common import Context, Row, checkpoint, distinct_clips, mixed_lengths

NAME = "gpu"
BATCH_WINDOWS = (1, 2, 4, 8, 16)


def run(ctx: Context) -> list[Row]:
    import torch

    if not torch.cuda.is_available():
        return [Row(NAME, "autocast and batch sweep", None, notes="skipped: no CUDA")]
    from emotionq.inference import EmotionModel
    from emotionq.inference.audio import decode

    paths = distinct_clips(ctx.workdir(NAME), mixed_lengths(8 if ctx.quick else 32))
    clips = [decode(p) for p in paths]
    model = EmotionModel.load(str(checkpoint("large")), device="cuda")
    try:
        return measure(model, clips, ctx.detail(NAME))
    finally:
        model.close()


def measure(model, clips: list, detail: dict) -> list[Row]:
    n = len(clips)

    def timed(fn) -> tuple[float, list]:
        fn()  # warm-up
        started = time.perf_counter()
        out = fn()
        return time.perf_counter() - started, out

    def loop() -> list[dict]:
        return [model.predict(c) for c in clips]

    def max_diff(a: list[dict], b: list) -> float:
        return max(abs(x["scores"][k] - y["scores"][k]) for x, y in zip(a, b) for k in x["scores"])

    dtype = model._autocast_dtype
    amp_s, amp = timed(loop)
    model._autocast_dtype = None
    try:
        fp32_s, fp32 = timed(loop)
    finally:
        model._autocast_dtype = dtype
    diff = max_diff(amp, fp32)
    detail.update(clips=n, autocast=str(dtype), autocast_s=amp_s, fp32_s=fp32_s, max_score_diff=diff)
    rows = [Row(NAME, f"{str(dtype).removeprefix('torch.')} autocast clips/s", n / amp_s, "clips/s", n / fp32_s,
                "fp32", notes=f"{n} mixed clips, large; max |score diff| {diff:.2e}")]
    for windows in BATCH_WINDOWS:
        took, out = timed(lambda: model.predict_batch(clips, max_batch_windows=windows))
        errors = [o for o in out if isinstance(o, Exception)]
        if errors:
            raise RuntimeError(f"predict_batch failed {len(errors)} of {n} clips: {errors[0]!r}")
        diff = max_diff(amp, out)
        detail[f"batch_{windows}"] = {"s": took, "max_score_diff_vs_predict": diff}
        rows.append(Row(NAME, f"predict_batch clips/s, {windows} windows", n / took, "clips/s", n / amp_s,
                        "predict loop, autocast", notes=f"max |score diff| vs predict {diff:.2e}"))
    return rows
