"""Pipeline efficiency: clips/s through the whole service over clips/s of a bare model loop.

Baseline: ``benchmarks.child`` — one process, ``EmotionModel.load(large, threads=2)`` then
``predict`` on each clip, decoded beforehand (decoding is timed but not counted): the model's own
speed on this machine, with both cores to itself. It runs before and after the service (the mean
is the baseline): two runs of it differ by up to ~15 % on this VM, and the spread is reported.

Service: the API and one worker (EMOTIONQ_TORCH_THREADS=2, EMOTIONQ_BATCH_SIZE=1) in distributed
mode, worker ready before the clock starts (model loading is in neither figure). One client uploads
the clips in order, then long-polls each result; the figure is clips / (first upload -> last result
seen). Everything else on this 2-core machine (API, Celery, RabbitMQ, Redis, the client) competes
with the worker's two torch threads: that cost is the service's own and is meant to be counted.

The loss is split from the jobs' own timestamps (every process shares this machine's clock):
head (upload -> first start), model time in the worker over the bare loop's, decode, the rest of a
job inside the worker (claim, blob lookup, output, complete), gaps between jobs (ack, next message,
claim), tail (last finish -> result seen by the client). They add up to the whole loss.
CPU seconds tell contention from work: the model process's own CPU time in each run, and every
core's busy time beside it (in the bare run that is other people's work on this machine).
"""

from __future__ import annotations

import time

from benchmarks.child import machine_busy_s, process_cpu_s
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

NAME = "pipeline"


def run(ctx: Context) -> list[Row]:
    n = 4 if ctx.quick else 24
    model = checkpoint("large")
    work = ctx.workdir(NAME)
    lengths = mixed_lengths(n)
    audio_s = sum(lengths)
    clips = distinct_clips(work / "clips", lengths)

    before = run_child("--model", model, "--threads", THREADS, *clips)
    with service(work, model) as svc:
        svc.start_worker()
        worker = svc.inference_worker_pids()[1]
        cpu, busy = process_cpu_s(worker), machine_busy_s()
        t0 = time.time()
        uploads = []
        ids = []
        for path in clips:
            started = time.perf_counter()
            ids += submit_all(svc, [path])
            uploads.append(time.perf_counter() - started)
        jobs = finish_all(svc, ids)
        t_end = time.time()
        cpu, busy = process_cpu_s(worker) - cpu, machine_busy_s() - busy

    bare = [before, run_child("--model", model, "--threads", THREADS, *clips)]
    bare_runs = [sum(c["predict_s"] for c in b["clips"]) for b in bare]
    bare_s = sum(bare_runs) / 2
    bare_cpu = sum(b["predict_cpu_s"] for b in bare) / 2
    bare_other = sum(b["machine_busy_s"] - b["predict_cpu_s"] for b in bare)
    wall = t_end - t0
    parts = breakdown(jobs, t0, t_end, bare_s)
    per_job = {k: round(v / n * 1e3, 1) for k, v in parts.items()}
    top = sorted(per_job.items(), key=lambda kv: -kv[1])[:3]
    ctx.detail(NAME).update({
        "clips": n, "audio_s": audio_s, "bare_runs": [{k: v for k, v in b.items() if k != "clips"} for b in bare],
        "bare_predict_s": bare_runs, "service_wall_s": wall, "worker_cpu_s": cpu, "service_machine_busy_s": busy,
        "upload_ms_mean": sum(uploads) / n * 1e3, "loss_s": wall - bare_s, "loss_parts_s": parts,
        "loss_parts_ms_per_job": per_job,
        "jobs": [{"duration_s": j["input"]["duration_s"], "bare_predict_s": [b["clips"][k]["predict_s"] for b in bare],
                  "created_at": j["created_at"], "started_at": j["started_at"], "finished_at": j["finished_at"],
                  "timing": j["output"]["timing"]} for k, j in enumerate(jobs)],
    })
    return [Row(NAME, "clips/s through the service", n / wall, "clips/s", n / bare_s,
                f"bare EmotionModel.predict loop, {THREADS} threads, mean of 2",
                notes=f"{n} clips, {audio_s:g} s of speech, large; bare runs {bare_runs[0]:.1f}/{bare_runs[1]:.1f} s, "
                      f"service {wall:.1f} s; loss {(wall - bare_s) / n * 1e3:.0f} ms/job, most: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in top)
                      + f"; CPU s: worker {cpu:.0f}, bare {bare_cpu:.0f}; others' busy core-s: "
                      f"service run {busy - cpu:.0f} (API etc. included), bare runs {bare_other:.0f}")]


def breakdown(jobs: list[dict], t0: float, t_end: float, bare_s: float) -> dict[str, float]:
    """Where the service's wall time beyond the bare model time went, in seconds (sums to the loss)."""
    jobs = sorted(jobs, key=lambda j: ts(j["started_at"]))
    start = [ts(j["started_at"]) for j in jobs]
    end = [ts(j["finished_at"]) for j in jobs]
    decode = sum(j["output"]["timing"]["decode_ms"] for j in jobs) / 1e3
    infer = sum(j["output"]["timing"]["inference_ms"] for j in jobs) / 1e3
    in_worker = sum(e - s for s, e in zip(start, end))
    return {
        "head (upload to first start)": start[0] - t0,
        "model slower than bare": infer - bare_s,
        "decode": decode,
        "worker, not model/decode": in_worker - decode - infer,
        "between jobs": sum(s - e for e, s in zip(end, start[1:])),
        "tail (finish to client)": t_end - end[-1],
    }
