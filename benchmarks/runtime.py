"""CPU runtime: the worker on int8 graphs against the bare funasr loop, and against its own predict loop.

Per mix of clip lengths (short clips, utterances, long clips: ``SHORT/UTTERANCE/MIXED_LENGTHS_S``), on the
large checkpoint, 2 threads everywhere, one run:
- baseline: ``benchmarks.child --loop funasr``: one process, ``funasr.AutoModel(large, ncpu=2)`` and its own
  ``generate`` on each clip, decoded beforehand: what a user of funasr gets. It runs before and after the
  rest (the mean is the baseline; the spread is in the notes). It also gives each clip's fp32 scores and
  embedding, for the fidelity figures.
- the predict loop: ``benchmarks.child --runtime onnx-int8``, EmotionModel.predict on each clip in turn (no
  service, no batching): the runtime's own speed, and the worker's ceiling; before and after the drains.
- the worker: a backlog drained by one real worker (EMOTIONQ_RUNTIME=onnx-int8, batching as deployed:
  EMOTIONQ_BATCH_SIZE 8), clips / (first job started -> last job finished), from the jobs' own timestamps
  (model loading and the graphs' check are in neither figure). Its results (with embeddings) against
  funasr's fp32 ones on the same files: how many keep funasr's top label, the largest score difference,
  the lowest embedding cosine.
- before/after for the worker against its predict loop: the same drain with padded passes of up to 16 s
  (``EMOTIONQ_BATCH_PASS_S=16``, what CPU workers did before onnxruntime got one window a pass), right
  after the default one on each mix (the load of a shared machine drifts by the minute).
Goals (issue 26): the worker at >= 2.5x the funasr loop on a CPU with VNNI (>= 1.5x on AVX2 only), and at
>= 0.95x its own predict loop, on each mix. The CPU's model and flags are in every row's notes.
"""

from __future__ import annotations

import os

import numpy as np

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
from benchmarks.rows import cpu

NAME = "runtime"
BATCH_SIZE = 8  # the worker's default (Settings.batch_size)
RUNTIME = "onnx-int8"
PADDED_PASS_S = 16  # the "before" drain: CPU passes as they were for every runtime


def run(ctx: Context) -> list[Row]:
    n = 24 if ctx.quick else 48  # a drain of a few seconds (12 short clips: 2) is within the minute-to-minute drift
    model = checkpoint("large")
    work = ctx.workdir(NAME)
    clips = {mix: distinct_clips(work / f"clips-{_slug(mix)}", mixed_lengths(n, lengths))
             for mix, lengths in MIXES.items()}
    padded_clips = {mix: distinct_clips(work / f"clips-{_slug(mix)}-padded", mixed_lengths(n, lengths))
                    for mix, lengths in MIXES.items()}  # fresh bytes: the second drain must not hit the dedup cache
    every = [path for paths in clips.values() for path in paths]
    detail = ctx.detail(NAME)
    machine = cpu()
    load = [os.getloadavg()[0]]

    bare = [run_child("--model", model, "--threads", THREADS, "--loop", "funasr", "--outputs", *every)]
    alone = run_child("--model", model, "--threads", THREADS, "--runtime", RUNTIME, *every)
    if alone["runtime"] != "onnxruntime-int8":
        raise RuntimeError(f"the model did not run on int8 graphs: {alone['runtime_note']}")
    load.append(os.getloadavg()[0])
    drains: dict[str, dict] = {}
    with service(work, model, EMOTIONQ_RUNTIME=RUNTIME, EMOTIONQ_BATCH_SIZE=str(BATCH_SIZE)) as svc:
        for mix in MIXES:  # before and after back to back, per mix: this machine's load drifts by the minute
            for label, paths, env in (("one window a pass", clips[mix], None),
                                      ("padded passes", padded_clips[mix], PADDED_PASS_S)):
                if env is None:
                    svc.env.pop("EMOTIONQ_BATCH_PASS_S", None)
                else:
                    svc.env["EMOTIONQ_BATCH_PASS_S"] = str(env)
                ids = submit_all(svc, paths, threads=4, embedding="true")
                svc.start_worker(wait=False)
                jobs = finish_all(svc, ids)
                svc.stop("worker")
                runtimes = {j["output"]["model"]["runtime"] for j in jobs}
                if runtimes != {"onnxruntime-int8"}:
                    raise RuntimeError(f"the worker ran {runtimes}, not onnxruntime-int8: see {work}/worker.log")
                span = max(ts(j["finished_at"]) for j in jobs) - min(ts(j["started_at"]) for j in jobs)
                sizes = [j["output"]["timing"]["batch_size"] for j in jobs]
                drains[f"{mix}, {label}"] = {"clips": n, "drain_s": span, "clips_per_s": n / span,
                                             "mean_batch": sum(sizes) / n, "jobs": jobs}
    load.append(os.getloadavg()[0])
    loops = [alone, run_child("--model", model, "--threads", THREADS, "--runtime", RUNTIME, *every)]
    bare.append(run_child("--model", model, "--threads", THREADS, "--loop", "funasr", *every))
    load.append(os.getloadavg()[0])

    def seconds(result: dict, mix: str) -> float:
        names = {str(p) for p in clips[mix]}
        return sum(c["predict_s"] for c in result["clips"] if c["path"] in names)

    reference = {c["path"]: c for c in bare[0]["clips"]}
    detail.update(cpu=machine, loadavg_1m=load, check=alone["runtime_note"],
                  bare_load_s=[b["load_s"] for b in bare], int8_load_s=alone["load_s"])
    rows = []
    for mix, lengths in MIXES.items():
        audio = sum(mixed_lengths(n, lengths))
        runs = [seconds(b, mix) for b in bare]
        bare_rate = n / (sum(runs) / len(runs))
        loop_runs = [seconds(loop, mix) for loop in loops]
        loop_rate = n / (sum(loop_runs) / len(loop_runs))
        now, before = drains[f"{mix}, one window a pass"], drains[f"{mix}, padded passes"]
        fidelity = _fidelity(now["jobs"], [reference[str(p)] for p in clips[mix]])
        for d in (now, before):
            d.pop("jobs")
        detail[mix] = {"audio_s": audio, "bare_s": runs, "int8_predict_s": loop_runs, "fidelity": fidelity,
                       "worker": now, "worker_padded_passes": before}
        spread = f"bare runs {'/'.join(f'{r:.1f}' for r in runs)} s"
        where = f"{machine['text']}; load average {min(load):.1f}-{max(load):.1f} (machine shared)"
        rows.append(Row(NAME, f"worker clips/s, onnx-int8, {mix}", now["clips_per_s"], "clips/s", bare_rate,
                        f"bare funasr generate loop, torch eager fp32, {THREADS} threads, mean of {len(runs)}",
                        notes=f"{n} clips, {audio:g} s (mean {audio / n:.1f} s), large; fidelity vs funasr fp32: top "
                              f"label kept {fidelity['same_top_label']}/{n}, scores within "
                              f"{fidelity['max_score_diff']:.1e}, embedding cosine >= {fidelity['min_cosine']:.5f}; "
                              f"worker batch {BATCH_SIZE} (mean {now['mean_batch']:.1f}); {spread}; {where}"))
        rows.append(Row(NAME, f"worker vs its predict loop, onnx-int8, {mix}", now["clips_per_s"], "clips/s",
                        loop_rate, "EmotionModel.predict loop, same runtime, mean of 2",
                        notes=f"loop runs {'/'.join(f'{r:.1f}' for r in loop_runs)} s, before and after the drains; "
                              f"before (padded passes of up to {PADDED_PASS_S} s, EMOTIONQ_BATCH_PASS_S="
                              f"{PADDED_PASS_S}): {before['clips_per_s']:.2f} clips/s = "
                              f"{before['clips_per_s'] / loop_rate:.3f}x the loop"))
        rows.append(Row(NAME, f"model clips/s, onnx-int8 predict loop, {mix}", loop_rate, "clips/s", bare_rate,
                        "bare funasr generate loop", notes=f"EmotionModel.predict one clip at a time; {spread}"))
    return rows


def _fidelity(jobs: list[dict], references: list[dict]) -> dict:
    """The worker's results against funasr's fp32 ones on the same clips (scores in label order, embeddings)."""
    from emotionq.inference.quantization import cosine

    diffs, cosines, same = [], [], 0
    for job, ref in zip(jobs, references, strict=True):
        scores = np.asarray(list(job["output"]["scores"].values()))
        theirs = np.asarray(ref["scores"])
        diffs.append(float(np.abs(scores - theirs).max()))
        cosines.append(cosine(job["output"]["embedding"], ref["embedding"]))
        same += int(np.argmax(scores) == np.argmax(theirs))
    return {"same_top_label": same, "max_score_diff": max(diffs), "mean_max_score_diff": float(np.mean(diffs)),
            "min_cosine": min(cosines)}


def _slug(mix: str) -> str:
    return mix.replace(" ", "-")
