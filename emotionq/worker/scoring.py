"""Scoring runs: claim them, decode their audio, run the model, record each outcome.

Plain code: the Celery task in ``emotionq.tasks`` only wires it up (and gathers
the batch), and tests call it without a broker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from emotionq import jobs, metrics
from emotionq.blobs import BlobStore
from emotionq.errors import (
    BadInput,
    BlobStoreUnavailable,
    Canceled,
    EmotionQError,
    RunTimeLimit,
    ServerFault,
    TransientFault,
)
from emotionq.inference import registry, segmented
from emotionq.inference.audio import SAMPLE_RATE, decode, decode_channels
from emotionq.inference.contract import Model
from emotionq.settings import Settings
from emotionq.store import Store

log = logging.getLogger(__name__)

Notify = Callable[[jobs.Run, str], None]
# How often, at most, a batch asks the store whether its runs are still wanted (between forward passes).
# Every pass did, for every run of the batch: on a CPU with one window a pass that was a store read per
# run per window, a few percent of a short clip's time; a cancel now stops its run within this much more.
WANTED_CHECK_S = 0.25


@dataclass(frozen=True)
class Member:
    """One run in a batch, and the id of the task message that carries it."""

    run_id: str
    task_id: str


def score_runs(
    *,
    store: Store,
    blobs: BlobStore,
    models: dict[str, Model],
    settings: Settings,
    members: list[Member],
    worker: str,
    hard_limit_s: float,
    notify: Notify = lambda run, event: None,
    started: float | None = None,
    on_claimed: Callable[[], None] = lambda: None,
) -> list[str]:
    """Score ``members`` in shared forward passes; returns what happened to each, in order
    ("succeeded", "failed", or why it was skipped).

    ``models``: the model families this worker serves, by name (``emotionq.inference.registry``); each run
    is scored by those it needs, on the same decoded audio and segments.

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
    propagates, as Celery's own soft limit would. ``on_claimed()`` is called once the claims are made
    (the worker dispatches more runs then: these no longer count as waiting in the broker).
    """
    batch = _Batch(store=store, blobs=blobs, models=models, settings=settings, worker=worker, notify=notify)
    claimed = [(i, member, run) for i, member in enumerate(members)
               if (run := batch.claim(i, member, hard_limit_s)) is not None]
    on_claimed()
    decoded = [d for i, member, run in claimed if (d := batch.decode(i, member, run)) is not None]
    if decoded:
        batch.score(decoded, started=time.monotonic() if started is None else started)
    return [batch.outcomes[i] for i in range(len(members))]


@dataclass
class _Decoded:
    index: int  # in the batch's members
    member: Member
    run: jobs.Run
    plan: segmented.Plan  # its tracks (channels) and the windows or speech segments of each
    duration_s: float
    decode_s: float


@dataclass
class _Batch:
    """One call of ``score_runs``: what it works with, and each member's outcome so far."""

    store: Store
    blobs: BlobStore
    models: dict[str, Model]
    settings: Settings
    worker: str
    notify: Notify
    outcomes: dict[int, str] = field(default_factory=dict)

    def claim(self, i: int, member: Member, hard_limit_s: float) -> jobs.Run | None:
        """The run, claimed for this task; None (and the outcome noted) if it is not ours to score."""
        claim = jobs.claim(self.store, run_id=member.run_id, task_id=member.task_id, worker=self.worker,
                           max_deliveries=self.settings.max_deliveries, hard_limit_s=hard_limit_s)
        if claim.go:
            self.notify(claim.run, "job.started")  # again when redelivered: the first telling may have died
            return claim.run
        log.info("run %s skipped: %s", member.run_id, claim.reason)
        if claim.reason == "poison":  # failed by this claim
            metrics.run_finished(claim.run)
        if claim.reason in ("finished", "poison") and claim.run.state in ("succeeded", "failed"):
            self.notify(claim.run, f"job.{claim.run.state}")
        self.outcomes[i] = claim.reason
        return None

    def decode(self, i: int, member: Member, run: jobs.Run) -> _Decoded | None:
        """The run's audio, decoded (its length recorded); None if it fails, as it then has."""
        began = time.perf_counter()
        try:
            channels = _decode(self.blobs, run, self.settings)
            duration_s = channels[0].size / SAMPLE_RATE
            jobs.record_decoded(self.store, run_id=member.run_id, task_id=member.task_id, duration_s=duration_s)
            jobs.check_channels(len(channels), run.options, max_channels=self.settings.max_channels)
            plan = segmented.tracks(channels, run.options, window_s=self.settings.window_seconds,
                                    device=self.settings.worker_device)
        except TransientFault:
            raise  # the object store is down: the batch goes back, and is retried
        except EmotionQError as exc:
            self.outcomes[i] = _fail_member(self.store, member, exc, self.notify)
            return None
        return _Decoded(i, member, run, plan, duration_s, time.perf_counter() - began - plan.vad_s - plan.diarize_s)

    def score(self, decoded: list[_Decoded], *, started: float) -> None:
        """One model call for the tracks of all of ``decoded``; each run's result recorded on its own."""
        metrics.observe_batch(len(decoded))
        watch = _Watch(self.store, [d.member for d in decoded], settings=self.settings, started=started,
                       audio_s=sum(max(d.duration_s, d.plan.audio_s()) for d in decoded))
        entries = [(k, track) for k, d in enumerate(decoded) for track in d.plan.scored()]
        began = time.perf_counter()
        results, per_family_s = self._predict(entries, decoded, watch)
        inference_s = time.perf_counter() - began
        if entries:
            metrics.observe_inference(inference_s, worker=self.worker)
        for k, d in enumerate(decoded):
            mine = [r for (owner, _), r in zip(entries, results) if owner == k]
            problem = next((r for r in mine if isinstance(r, BaseException)), None)
            if isinstance(problem, Canceled) or k in watch.stopped:
                log.info("run %s stopped: every job that wanted it was canceled", d.member.run_id)
                metrics.run_finished(watch.stopped[k])
                self.outcomes[d.index] = "canceled"
            elif isinstance(problem, EmotionQError) and not isinstance(problem, TransientFault):
                self.outcomes[d.index] = _fail_member(self.store, d.member, problem, self.notify)
            elif problem is not None:
                raise problem
            else:
                result = segmented.combine(d.plan, mine, model=self.models[registry.EMOTION2VEC].info().output(),
                                           duration_s=d.duration_s, extra_models={
                                               n: self.models[n].info().output()
                                               for n in registry.needed(d.run.options)[1:]})
                result["timing"] = {"decode_ms": round(d.decode_s * 1e3, 1),
                                    "inference_ms": round(inference_s * 1e3, 1), "batch_size": len(decoded)}
                for name in registry.needed(d.run.options)[1:]:  # what the other families took of it
                    result["timing"][f"{name}_ms"] = round(per_family_s.get(name, 0.0) * 1e3, 1)
                if d.plan.segmentation == "vad":
                    result["timing"]["vad_ms"] = round(d.plan.vad_s * 1e3, 1)
                if d.plan.diarized:
                    result["timing"]["diarize_ms"] = round(d.plan.diarize_s * 1e3, 1)
                self._complete(d, result)

    def _predict(self, entries: list, decoded: list[_Decoded], watch: _Watch) -> tuple[list, dict[str, float]]:
        """(Each entry's result, seconds each family's call took). The result: every family its run needs, one ``predict_batch`` call per family over the
        entries that need it, merged into the emotion model's result (``segmented.merge``); an exception
        where one failed for that entry (or the run needs a family this worker does not serve)."""
        s = self.settings
        needs = [registry.needed(decoded[k].run.options) for k, _ in entries]
        results: list = [None] * len(entries)
        seconds: dict[str, float] = {}
        for name in registry.FAMILIES:
            mine = [i for i, need in enumerate(needs) if name in need and not isinstance(results[i], Exception)]
            if not mine:
                continue
            model = self.models.get(name)
            if model is None:
                for i in mine:
                    results[i] = ServerFault(f"this worker does not serve {name}: the run reached the wrong queue",
                                             code="model_unavailable")
                continue
            began = time.perf_counter()
            out = model.predict_batch(
                [entries[i][1].samples for i in mine],
                options=[segmented.model_options(decoded[entries[i][0]].run.options, entries[i][1],
                                                 decoded[entries[i][0]].plan, name) for i in mine],
                window_s=s.window_seconds, max_batch_windows=s.batch_windows, max_batch_s=s.batch_pass_s,
                before_pass=lambda mine=mine: _tracks_of(watch(), [entries[i] for i in mine]))
            seconds[name] = time.perf_counter() - began
            for i, r in zip(mine, out):
                results[i] = r if results[i] is None or isinstance(r, BaseException) else segmented.merge(results[i], r)
        return results, seconds

    def _complete(self, d: _Decoded, result: dict) -> None:
        done = jobs.complete(self.store, run_id=d.member.run_id, task_id=d.member.task_id, output=result,
                             settings=self.settings)
        if done:
            metrics.run_finished(done)
            self.notify(done, "job.succeeded")
        self.outcomes[d.index] = "succeeded"


class _Watch:
    """``predict_batch``'s ``before_pass``: stops runs nobody wants (asking the store at most every
    ``WANTED_CHECK_S``), and holds the batch to its time limit (before every pass)."""

    def __init__(self, store: Store, members: list[Member], *, settings: Settings, started: float,
                 audio_s: float) -> None:
        self.store, self.members, self.audio_s = store, members, audio_s
        self.soft_s = settings.time_limits(audio_s)[0]
        self.deadline = started + self.soft_s
        self.stopped: dict[int, jobs.Run] = {}  # member index -> the run, recorded canceled
        self._asked_at = float("-inf")

    def __call__(self) -> set[int]:
        now = time.monotonic()
        if now > self.deadline:
            raise RunTimeLimit(f"the job ran past its {self.soft_s:.0f} s limit for {self.audio_s:.0f} s of "
                               "audio (as decoded); it is not retried")
        if now - self._asked_at < WANTED_CHECK_S:
            return set(self.stopped)
        self._asked_at = now
        for k, member in enumerate(self.members):
            if k not in self.stopped:
                run = jobs.stop_if_unwanted(self.store, run_id=member.run_id, task_id=member.task_id)
                if run is not None:
                    self.stopped[k] = run
        return set(self.stopped)


def _tracks_of(members: set[int], entries: list) -> set[int]:
    """The indices of ``entries`` (member index, track) that belong to ``members``."""
    return {i for i, (k, _) in enumerate(entries) if k in members}


def _decode(blobs: BlobStore, run: jobs.Run, settings: Settings) -> list[np.ndarray]:
    """The run's audio, decoded from a local copy: the mix, or each channel with channels=separate
    (BadInput ``audio_missing`` if the blob is gone)."""
    try:
        with blobs.local(run.sha256, run.blob) as path:
            if run.options.get("channels") == "separate":
                return decode_channels(path, max_seconds=settings.max_audio_seconds,
                                       max_channels=settings.max_channels)
            return [decode(path, max_seconds=settings.max_audio_seconds)]
    except BlobStoreUnavailable as exc:
        raise TransientFault(exc.message, code=exc.code) from exc


def _fail_member(store: Store, member: Member, exc: EmotionQError, notify: Notify) -> str:
    log.log(logging.INFO if isinstance(exc, BadInput) else logging.ERROR, "run %s failed: %s", member.run_id, exc)
    failed = jobs.fail(store, run_id=member.run_id, error=exc.as_dict(), task_id=member.task_id)
    if failed:
        metrics.run_finished(failed)
        notify(failed, "job.failed")
    return "failed"
