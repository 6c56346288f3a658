"""Transcripts: what SenseVoice costs beside emotion2vec, in time and in a worker's memory.

1. Time per audio second on the same speech segments (a call-like mix of espeak-ng turns, 2 minutes, 40 s
   with --quick; Silero VAD segments), in-process on the worker's CPU path: SenseVoiceSmall's size
   (``sensevoice-small``, 234M parameters, torch) vs emotion2vec base (93.8M, the worker's CPU runtime),
   each ``predict_batch`` over the segments as the worker calls it; the best of 2 runs.
2. Worker peak RSS (VmHWM, load included) with both models loaded and one short clip scored by each,
   vs emotion2vec alone, each in a fresh process (``python -m benchmarks.transcripts --child``) that
   loads its models as a worker process does (``ModelHolder``).
``speed`` runs on any pair of checkpoints: tests/test_benchmarks.py runs it on the tiny ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

NAME = "transcripts"


def run(ctx) -> list:
    from benchmarks.common import checkpoint

    work = ctx.workdir(NAME)
    e2v, sv = checkpoint("base"), checkpoint("sensevoice-small")
    rows = speed(ctx, work, e2v, sv, seconds=40.0 if ctx.quick else 120.0)
    rows += memory(ctx, work, e2v, sv)
    return rows


def speed(ctx, work: Path, e2v_dir: Path, sv_dir: Path, *, seconds: float, runtime: str = "auto",
          runs: int = 2) -> list:
    from audio_factory import make_turns  # tests/ is on the path once benchmarks.common is imported
    from benchmarks.common import ONNX_CACHE, THREADS, Row
    from benchmarks.segments import _turns
    from emotionq.inference import decode
    from emotionq.inference.contract import family
    from emotionq.inference.segmented import model_options, tracks

    path = work / "transcripts-mix.wav"
    make_turns(path, _turns(1, seconds))
    samples = decode(path)
    options = {"segmentation": "vad", "channels": "mix", "transcript": True, "language": "en"}
    plan = tracks([samples], options, window_s=30)
    [track] = plan.tracks
    speech_s = plan.audio_s()
    timings, infos = {}, {}
    for name, directory in (("emotion2vec", e2v_dir), ("sensevoice", sv_dir)):
        model = family(name).load(str(directory), threads=THREADS, runtime=runtime, runtime_cache_dir=ONNX_CACHE)
        opts = [model_options(options, track, plan, name)]
        best = float("inf")
        for _ in range(runs):
            began = time.perf_counter()
            [result] = model.predict_batch([samples], options=opts, max_batch_windows=16)
            best = min(best, time.perf_counter() - began)
            if isinstance(result, Exception):
                raise result
        timings[name], infos[name] = best, model.info()
        model.close()
    ctx.detail(NAME)["speed"] = {"audio_s": samples.size / 16000, "speech_s": speech_s, "segments": len(track.bounds),
                                 "seconds": timings, "runtimes": {k: i.runtime for k, i in infos.items()}}
    note = (f"{len(track.bounds)} VAD segments, {speech_s:.0f} s of speech; {e2v_dir.name} on "
            f"{infos['emotion2vec'].runtime}, {sv_dir.name} on {infos['sensevoice'].runtime}; {THREADS} threads")
    return [Row(NAME, "SenseVoice s per audio second (same segments)", timings["sensevoice"] / speech_s, "s/s",
                timings["emotion2vec"] / speech_s, "emotion2vec", notes=note)]


def memory(ctx, work: Path, e2v_dir: Path, sv_dir: Path) -> list:
    from benchmarks.common import ROOT, THREADS, Row, speech

    clip = speech(5)
    peaks = {}
    for label, extra in (("one", []), ("both", ["--sensevoice", str(sv_dir)])):
        out = subprocess.run([sys.executable, "-m", "benchmarks.transcripts", "--child", "--model", str(e2v_dir),
                              "--threads", str(THREADS), *extra, str(clip)], cwd=ROOT, capture_output=True,
                             text=True, timeout=1200)
        if out.returncode != 0:
            raise RuntimeError(f"benchmarks.transcripts --child failed:\n{out.stderr[-3000:]}")
        peaks[label] = json.loads(out.stdout.strip().splitlines()[-1])
    ctx.detail(NAME)["memory"] = peaks
    return [Row(NAME, "worker peak RSS, emotion2vec + SenseVoice", peaks["both"]["peak_mb"], "MB",
                peaks["one"]["peak_mb"], "emotion2vec alone",
                notes=f"{e2v_dir.name} + {sv_dir.name}, loaded as a worker process does, one 5 s clip each; "
                      f"resident after scoring {peaks['both']['rss_mb']:.0f} vs {peaks['one']['rss_mb']:.0f} MB")]


def _child(argv: list[str]) -> None:
    """Load the models as a worker process does, score ``clip`` with each, print peak and resident MB."""
    import argparse

    from benchmarks.child import status_mb
    from emotionq.inference import decode
    from emotionq.settings import Settings
    from emotionq.worker.runtime import ModelHolder

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--sensevoice")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("clip")
    args = parser.parse_args(argv)
    holder = ModelHolder(Settings(_env_file=None, model=args.model, sensevoice_model=args.sensevoice,
                                  torch_threads=args.threads))
    samples = decode(args.clip)
    for model in holder.models.values():
        [result] = model.predict_batch([samples])
        if isinstance(result, Exception):
            raise result
    print(json.dumps({"models": sorted(holder.models), "peak_mb": status_mb("VmHWM"), "rss_mb": status_mb("VmRSS")}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
