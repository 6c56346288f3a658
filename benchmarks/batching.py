"""Batched worker over one-at-a-time worker: the same backlog drained with EMOTIONQ_BATCH_SIZE=8 vs 1.

One API; for each mix of clip lengths and each batch size, a backlog (fresh bytes each time, so
dedup never answers) is queued first, then a worker (large checkpoint, 2 threads) is started and
drains it. Drain rate = clips / (first job started -> last job finished), from the jobs' own
timestamps, so model loading is not counted. Three mixes: short clips (mean 2.1 s), utterances as
emotion corpora have them (mean 4.5 s) and longer clips (mean 7.4 s). On a CPU with torch a forward pass holds at
most 16 padded seconds (``MAX_BATCH_S``), so the gain comes from short clips; long ones run alone either way. On
onnxruntime (what ``auto`` picks where it is faster) each window has its own pass: batch 8 then shares the claims
and the model call, not the passes.
"""

from __future__ import annotations

from benchmarks.common import (
    MIXED_LENGTHS_S,
    SHORT_LENGTHS_S,
    UTTERANCE_LENGTHS_S,
    Context,
    Row,
    checkpoint,
    distinct_clips,
    finish_all,
    mixed_lengths,
    service,
    submit_all,
    ts,
)

NAME = "batching"
SIZES = (1, 8)  # baseline first
MIXES = {"short clips": SHORT_LENGTHS_S, "utterances": UTTERANCE_LENGTHS_S, "long clips": MIXED_LENGTHS_S}


def run(ctx: Context) -> list[Row]:
    n = 12 if ctx.quick else 24
    model = checkpoint("large")
    work = ctx.workdir(NAME)
    rows = []
    with service(work, model) as svc:
        for mix, lengths in MIXES.items():
            rates = {}
            for size in SIZES:
                clips = distinct_clips(work / f"clips-{mix.replace(' ', '-')}-{size}", mixed_lengths(n, lengths))
                ids = submit_all(svc, clips, threads=4)
                svc.env["EMOTIONQ_BATCH_SIZE"] = str(size)
                svc.start_worker(wait=False)
                jobs = finish_all(svc, ids)
                svc.stop("worker")
                span = max(ts(j["finished_at"]) for j in jobs) - min(ts(j["started_at"]) for j in jobs)
                rates[size] = n / span
                sizes = [j["output"]["timing"]["batch_size"] for j in jobs]
                ctx.detail(NAME)[f"{mix}, batch {size}"] = {
                    "clips": n, "audio_s": sum(mixed_lengths(n, lengths)), "drain_s": span,
                    "clips_per_s": rates[size], "mean_batch": sum(sizes) / len(sizes)}
            audio = sum(mixed_lengths(n, lengths))
            rows.append(Row(NAME, f"drain clips/s, batch {SIZES[1]}, {mix}", rates[SIZES[1]], "clips/s",
                            rates[SIZES[0]], f"batch {SIZES[0]}",
                            notes=f"{n} clips, {audio:g} s (mean {audio / n:.1f} s), large, 2 threads"))
    return rows
