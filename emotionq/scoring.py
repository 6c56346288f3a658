"""Scoring runs: claim them, decode their audio, run the model, record each outcome.

Plain functions: the Celery task in ``emotionq.tasks`` only wires them up (and
gathers the batch), and tests call them without a broker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from emotionq import jobs, metrics
from emotionq.blobs import BlobStore
from emotionq.errors import BadInput, Canceled, EmotionQError, RunTimeLimit, TransientFault
from emotionq.inference.audio import SAMPLE_RATE, decode
from emotionq.settings import Settings
from emotionq.store import Store

log = logging.getLogger(__name__)

Notify = Callable[[dict, str], None]


@dataclass(frozen=True)
class Member:
    """One run in a batch, and the id of the task message that carries it."""

    run_id: str
    task_id: str


def score_runs(
    *,
    store: Store,
    blobs: BlobStore,
    model,
    settings: Settings,
    members: list[Member],
    worker: str,
    hard_limit_s: float,
    notify: Notify = lambda run, event: None,
    started: float | None = None,
) -> list[str]:
    """Score ``members`` in shared forward passes; returns what happened to each, in order
    ("succeeded", "failed", or why it was skipped).

    Each run is claimed, decoded and recorded on its own, so a bad file fails
    alone. Transient faults of the shared forward pass (TransientFault,
    StoreUnavailable) and anything unexpected propagate, with every claimed run
    still running: the caller requeues or fails them. ``notify(run, event)`` is
    told of job.started / job.succeeded / job.failed (for webhooks); it is told
    again when a message comes back for a finished run, in case the first
    telling was lost.

    Between forward passes, a run whose jobs were all canceled is stopped (recorded canceled),
    and the batch is held to the soft time limit of the audio it really holds, decoded, from
    ``started`` (``time.monotonic()`` when the task began; default now): past it RunTimeLimit
    propagates, as Celery's own soft limit would.
    """
    started = time.monotonic() if started is None else started
    outcomes: dict[int, str] = {}
    claimed: list[tuple[int, Member, dict]] = []
    for i, member in enumerate(members):
        claim = jobs.claim(store, run_id=member.run_id, task_id=member.task_id, worker=worker,
                           max_deliveries=settings.max_deliveries, hard_limit_s=hard_limit_s)
        if not claim.go:
            log.info("run %s skipped: %s", member.run_id, claim.reason)
            if claim.reason == "poison":  # failed by this claim
                metrics.run_finished(claim.run)
            if claim.reason in ("finished", "poison") and claim.run["state"] in ("succeeded", "failed"):
                notify(claim.run, f"job.{claim.run['state']}")
            outcomes[i] = claim.reason
            continue
        notify(claim.run, "job.started")  # again when redelivered: the first telling may have died with its worker
        claimed.append((i, member, claim.run))

    decoded: list[tuple[int, Member, dict, object, float]] = []
    for i, member, run in claimed:
        decode_began = time.perf_counter()
        try:
            samples = _decode(blobs, run, settings)
        except EmotionQError as exc:
            outcomes[i] = _fail(store, member, exc, notify)
            continue
        jobs.record_decoded(store, run_id=member.run_id, task_id=member.task_id, duration_s=samples.size / SAMPLE_RATE)
        decoded.append((i, member, run, samples, time.perf_counter() - decode_began))

    if decoded:
        metrics.observe_batch(len(decoded))
        watch = _Watch(store, [d[1] for d in decoded], settings=settings, started=started,
                       audio_s=sum(d[3].size for d in decoded) / SAMPLE_RATE)
        began = time.perf_counter()
        results = model.predict_batch([d[3] for d in decoded], options=[d[2]["options"] for d in decoded],
                                      window_s=settings.window_seconds, max_batch_windows=settings.batch_windows,
                                      max_batch_s=settings.batch_pass_s, before_pass=watch)
        inference_s = time.perf_counter() - began
        metrics.observe_inference(inference_s, worker=worker)
        inference_ms = round(inference_s * 1e3, 1)
        for k, ((i, member, run, _, decode_s), result) in enumerate(zip(decoded, results)):
            if isinstance(result, Canceled):
                log.info("run %s stopped: every job that wanted it was canceled", member.run_id)
                metrics.run_finished(watch.stopped[k])
                outcomes[i] = "canceled"
                continue
            if isinstance(result, EmotionQError) and not isinstance(result, TransientFault):
                outcomes[i] = _fail(store, member, result, notify)
                continue
            if isinstance(result, BaseException):
                raise result
            result["timing"] = {"decode_ms": round(decode_s * 1e3, 1), "inference_ms": inference_ms,
                                "batch_size": len(decoded)}
            done = jobs.complete(store, run_id=member.run_id, task_id=member.task_id, output=result,
                                 settings=settings)
            if done:
                metrics.run_finished(done)
                notify(done, "job.succeeded")
            outcomes[i] = "succeeded"
    return [outcomes[i] for i in range(len(members))]


class _Watch:
    """``predict_batch``'s ``before_pass``: stops runs nobody wants, and holds the batch to its time limit."""

    def __init__(self, store: Store, members: list[Member], *, settings: Settings, started: float,
                 audio_s: float) -> None:
        self.store, self.members, self.audio_s = store, members, audio_s
        self.soft_s = settings.time_limits(audio_s)[0]
        self.deadline = started + self.soft_s
        self.stopped: dict[int, dict] = {}  # member index -> the run, recorded canceled

    def __call__(self) -> set[int]:
        if time.monotonic() > self.deadline:
            raise RunTimeLimit(f"the job ran past its {self.soft_s:.0f} s limit for {self.audio_s:.0f} s of "
                               "audio (as decoded); it is not retried")
        for k, member in enumerate(self.members):
            if k not in self.stopped:
                run = jobs.stop_if_unwanted(self.store, run_id=member.run_id, task_id=member.task_id)
                if run is not None:
                    self.stopped[k] = run
        return set(self.stopped)


def _decode(blobs: BlobStore, run: dict, settings: Settings):
    path = blobs.path(run["sha256"])
    if not path.exists():
        raise BadInput(f"the audio blob {run['sha256']} is gone from {blobs.root}; upload it again",
                       code="audio_missing")
    return decode(path, max_seconds=settings.max_audio_seconds)


def _fail(store: Store, member: Member, exc: EmotionQError, notify: Notify) -> str:
    log.log(logging.INFO if isinstance(exc, BadInput) else logging.ERROR, "run %s failed: %s", member.run_id, exc)
    failed = jobs.fail(store, run_id=member.run_id, error=exc.as_dict(), task_id=member.task_id)
    if failed:
        metrics.run_finished(failed)
        notify(failed, "job.failed")
    return "failed"
