"""Worker peak memory: a 10-minute recording vs a 30 s one (large checkpoint).

Each recording is scored in a fresh ``benchmarks.child`` process (the worker's path: load with
2 threads and the default runtime, onnxruntime where it passes its check, ``decode``, ``predict`` with
the configured 30 s windows). VmHWM never goes down, so a
fresh process per measurement, with the mark reset after loading: the peak is that of decoding
and scoring on top of the resident model.
"""

from __future__ import annotations

from benchmarks.common import THREADS, Context, Row, checkpoint, run_child, speech

NAME = "memory"
SHORT_S = 30


def run(ctx: Context) -> list[Row]:
    long_s = 120 if ctx.quick else 600
    model = checkpoint("large")
    short, long = (run_child("--model", model, "--threads", THREADS, speech(s)) for s in (SHORT_S, long_s))
    ctx.detail(NAME).update({f"{SHORT_S}s": short, f"{long_s}s": long})
    above = {k: r["peak_mb"] - r["rss_loaded_mb"] for k, r in (("short", short), ("long", long))}
    reset = "" if short["peak_reset"] and long["peak_reset"] else "; VmHWM could not be reset: load peak included"
    return [Row(NAME, f"worker peak RSS, {long_s / 60:g} min recording", long["peak_mb"], "MB", short["peak_mb"],
                f"{SHORT_S} s recording",
                notes=f"{long['runtime']} (EMOTIONQ_RUNTIME=auto, the worker's default); "
                      f"model resident {long['rss_loaded_mb']:.0f} MB; above it {above['long']:.0f} vs "
                      f"{above['short']:.0f} MB; predict {long['clips'][0]['predict_s']:.0f} s vs "
                      f"{short['clips'][0]['predict_s']:.1f} s{reset}")]
