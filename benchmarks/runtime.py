"""CPU runtime: the worker on onnxruntime against the bare funasr loop (torch eager), per mix of clip lengths.

Baseline: ``benchmarks.child --loop funasr`` — one process, ``funasr.AutoModel(large, ncpu=2)`` and its own
``generate`` on each clip, decoded beforehand: what a user of funasr gets. It runs before and after the
rest (the mean is the baseline; the spread is in the notes), on all three mixes.

Figures, per mix (short clips, utterances, long clips: ``SHORT/UTTERANCE/MIXED_LENGTHS_S``):
- the worker: a backlog drained by one real worker (EMOTIONQ_RUNTIME=onnx, 2 threads, batching as
  deployed: EMOTIONQ_BATCH_SIZE 8), clips / (first job started -> last job finished), from the jobs'
  own timestamps (model loading and the graphs' check are in neither figure);
- the model alone: ``benchmarks.child --runtime onnx``, EmotionModel.predict on each clip in turn
  (no service, no batching): the runtime's own gain.
Goal: the worker at 1.8x the bare funasr loop or more on each mix.
"""

from __future__ import annotations

import os

from benchmarks.batching import MIXES
from benchmarks.common import (
    THREADS,
    Context,
    Row,
    checkpoint,
    distinct_clips,
    finish_all,
    mixed_lengths,
    run_child,
    service,
    submit_all,
    ts,
)

NAME = "runtime"
BATCH_SIZE = 8  # the worker's default (Settings.batch_size)


def run(ctx: Context) -> list[Row]:
    n = 12 if ctx.quick else 24
    model = checkpoint("large")
    work = ctx.workdir(NAME)
    clips = {mix: distinct_clips(work / f"clips-{mix.replace(' ', '-')}", mixed_lengths(n, lengths))
             for mix, lengths in MIXES.items()}
    every = [path for paths in clips.values() for path in paths]
    detail = ctx.detail(NAME)
    load = [os.getloadavg()[0]]

    bare = [run_child("--model", model, "--threads", THREADS, "--loop", "funasr", *every)]
    alone = run_child("--model", model, "--threads", THREADS, "--runtime", "onnx", *every)
    if alone["runtime"] != "onnxruntime":
        raise RuntimeError(f"the model did not run on onnxruntime: {alone['runtime_note']}")
    load.append(os.getloadavg()[0])
    drains = {}
    with service(work, model, EMOTIONQ_RUNTIME="onnx", EMOTIONQ_BATCH_SIZE=str(BATCH_SIZE)) as svc:
        for mix, paths in clips.items():
            ids = submit_all(svc, paths, threads=4)
            svc.start_worker(wait=False)
            jobs = finish_all(svc, ids)
            svc.stop("worker")
            runtimes = {j["output"]["model"]["runtime"] for j in jobs}
            if runtimes != {"onnxruntime"}:
                raise RuntimeError(f"the worker ran {runtimes}, not onnxruntime: see {work}/worker.log")
            span = max(ts(j["finished_at"]) for j in jobs) - min(ts(j["started_at"]) for j in jobs)
            sizes = [j["output"]["timing"]["batch_size"] for j in jobs]
            drains[mix] = {"clips": n, "drain_s": span, "clips_per_s": n / span, "mean_batch": sum(sizes) / n}
    load.append(os.getloadavg()[0])
    bare.append(run_child("--model", model, "--threads", THREADS, "--loop", "funasr", *every))
    load.append(os.getloadavg()[0])

    def seconds(result: dict, mix: str) -> float:
        names = {str(p) for p in clips[mix]}
        return sum(c["predict_s"] for c in result["clips"] if c["path"] in names)

    detail.update(loadavg_1m=load, check=alone["runtime_note"], drains=drains,
                  bare_load_s=[b["load_s"] for b in bare], onnx_load_s=alone["load_s"])
    rows = []
    for mix, lengths in MIXES.items():
        audio = sum(mixed_lengths(n, lengths))
        runs = [seconds(b, mix) for b in bare]
        bare_rate = n / (sum(runs) / len(runs))
        alone_rate = n / seconds(alone, mix)
        detail[mix] = {"audio_s": audio, "bare_s": runs, "onnx_predict_s": seconds(alone, mix), **drains[mix]}
        spread = f"bare runs {runs[0]:.1f}/{runs[1]:.1f} s"
        rows.append(Row(NAME, f"worker clips/s, onnxruntime, {mix}", drains[mix]["clips_per_s"], "clips/s",
                        bare_rate, f"bare funasr generate loop, torch eager, {THREADS} threads, mean of 2",
                        notes=f"{n} clips, {audio:g} s (mean {audio / n:.1f} s), large; worker batch "
                              f"{BATCH_SIZE} (mean {drains[mix]['mean_batch']:.1f}); {spread}; "
                              f"load average {min(load):.1f}-{max(load):.1f}"))
        rows.append(Row(NAME, f"model clips/s, onnxruntime predict loop, {mix}", alone_rate, "clips/s", bare_rate,
                        "bare funasr generate loop", notes=f"EmotionModel.predict one clip at a time; {spread}"))
    return rows
