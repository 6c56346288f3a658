"""Submitting: a new job attached to a new run, joined to a live one, or answered from a finished one.

One store transaction decides it, so concurrent identical uploads make exactly one run. A new run
is held there until its audio is filed (``mark_filed``), then enters its client's backlog
(``emotionq.jobs.scheduler.backlog``); the dispatcher, which the caller runs next, hands it to the broker in its
turn. No worker can be handed a run whose audio is not in the blob store yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Callable

from emotionq.errors import Conflict
from emotionq.jobs import blobrefs, lifecycle
from emotionq.jobs.domain import QUEUED, RUNNING, SUCCEEDED, Job, Run
from emotionq.jobs.records import (
    dedup_key,
    dedup_pointer,
    get_run,
    job_from_doc,
    job_key,
    new_id,
    pointed_run,
    points_to_result,
    put_job,
    run_from_doc,
    run_key,
)
from emotionq.settings import Priority, Settings
from emotionq.store import Store, Tx
from emotionq.store.base import AsyncStore

FILING_TIMEOUT_S = 120.0  # a new run whose audio is still not filed this long after its submission lost its filer


@dataclass(frozen=True)
class Submission:
    job: Job
    run: Run
    outcome: str  # "new" | "coalesced" | "cache" | "idempotent"
    publish: bool  # the caller must dispatch: work entered a backlog (a new run, or one raised to high)


@dataclass(frozen=True)
class _Ask:
    """One submission's names, decided before any store access."""

    key: str  # the dedup key
    fingerprint: str  # the whole request's, for its Idempotency-Key ("" without one)
    idem_key: str | None
    job_id: str
    job_ttl: int
    run_ttl: int
    new_job: Callable[..., Job]  # the job, given input, run_id, created_at and dedup

    def reuse_writes(self, job: Job) -> tuple[dict[str, tuple[dict, int]], list[str]]:
        """What ``Store.put_if`` writes for a job answered from a finished run, and the keys that must be absent."""
        idem = {self.idem_key: ({"job_id": self.job_id, "fingerprint": self.fingerprint}, self.job_ttl)} \
            if self.idem_key else {}
        return {job_key(job.id): (job.to_doc(), self.job_ttl), **idem}, [self.idem_key] if self.idem_key else []

    def lookups(self) -> list[str]:
        """The keys a reuse reads first: the dedup pointer, and the Idempotency-Key's record if one was sent."""
        return [dedup_pointer(self.key), *([self.idem_key] if self.idem_key else [])]


def _ask(*, settings: Settings, client: str, priority: Priority, sha256: str, options: dict, metadata: dict, model: str,
         webhook: dict | None, idempotency_key: str | None) -> _Ask:
    key = dedup_key(sha256=sha256, model=model, options=options)
    fingerprint = dedup_key(sha256=sha256, model=model, options={
        **options, "priority": priority, "webhook": webhook, "metadata": metadata}) if idempotency_key else ""
    job_id = new_id("job")
    return _Ask(key=key, fingerprint=fingerprint, idem_key=f"idem:{client}:{idempotency_key}" if idempotency_key else None,
                job_id=job_id, job_ttl=settings.job_ttl_seconds,
                run_ttl=max(settings.job_ttl_seconds, settings.result_ttl_seconds),
                new_job=partial(Job, id=job_id, client=client, priority=priority, options=options, metadata=metadata,
                                webhook=webhook))


def submit(store: Store, *, settings: Settings, client: str, priority: Priority, input: dict, options: dict,
           metadata: dict, model: str, webhook: dict | None = None, idempotency_key: str | None = None) -> Submission:
    """Create a job and attach it to a run, atomically with every concurrent submission (a known result
    first without a transaction: ``_reuse``)."""
    ask = _ask(settings=settings, client=client, priority=priority, sha256=input["sha256"], options=options,
               metadata=metadata, model=model, webhook=webhook, idempotency_key=idempotency_key)
    new_job = partial(ask.new_job, input=input)
    key, fingerprint, idem_key, job_id, run_ttl = ask.key, ask.fingerprint, ask.idem_key, ask.job_id, ask.run_ttl
    fresh_run_id = new_id("run")
    reused = _reuse(store, ask, new_job)
    if reused is not None:
        return reused

    def tx_submit(tx: Tx) -> Submission:
        now = time.time()
        earlier = _idempotent(tx, idem_key, fingerprint) if idem_key else None
        if earlier is not None:
            return earlier
        run_id = pointed_run(tx.get(dedup_pointer(key)))
        run = get_run(tx, run_id) if run_id else None
        if run is not None and run.state == SUCCEEDED:  # unchanged: only kept alive as long as its newest job
            outcome, publish = "cache", False
            tx.touch(run_key(run.id), run_ttl)
            tx.touch(dedup_pointer(key), run_ttl)
        elif run is not None and run.state in (QUEUED, RUNNING):  # the run needs the audio: hold it
            outcome = "coalesced"
            blobrefs.hold(tx, sha256=input["sha256"], run_id=None, now=now,
                          retention_s=settings.effective_blob_retention_s)
            publish = lifecycle.join(tx, run, job_id=job_id, priority=priority, settings=settings, ttl=run_ttl)
        else:
            outcome, publish = "new", True
            run = Run(id=fresh_run_id, key=key, sha256=input["sha256"], model=model, options=options,
                      duration_s=input["duration_s"], channels=input.get("channels", 1), priority=priority,
                      client=client, jobs=[job_id], created_at=now)
            run.blob = blobrefs.hold(tx, sha256=input["sha256"], run_id=run.id, now=now,
                                     retention_s=settings.effective_blob_retention_s)
            lifecycle.submit(tx, run, settings=settings, until=now + FILING_TIMEOUT_S, ttl=run_ttl)
        job = new_job(run_id=run.id, created_at=now, dedup=None if outcome == "new" else outcome)
        put_job(tx, job, ttl=settings.job_ttl_seconds)
        if idem_key:
            tx.put(idem_key, {"job_id": job_id, "fingerprint": fingerprint}, ttl=settings.job_ttl_seconds)
        return Submission(job, run, outcome, publish)

    return store.transact(tx_submit)


def _reuse(store: Store, ask: _Ask, new_job: Callable[..., Job]) -> Submission | None:
    """A finished result answered without a transaction: most repeats of known audio end here. A succeeded
    run never changes again, so the job is written if the run (and its dedup pointer) still exist, and
    the Idempotency-Key is new, without watching them: the many uploads of one popular recording do not
    make each other's transactions run again. None: not a cache hit (or the run went meanwhile), or a
    repeated Idempotency-Key; the transaction decides those."""
    pointer, *earlier = store.get_many(ask.lookups())
    if pointer is None or earlier not in ([], [None]):  # a miss, or a key used before: the transaction decides
        return None
    run_id = pointed_run(pointer)
    run = run_from_doc(store.get(run_key(run_id)), run_id)
    if run is None or run.state != SUCCEEDED:
        return None
    job = new_job(run_id=run.id, created_at=time.time(), dedup="cache")
    puts, absent = ask.reuse_writes(job)
    if not store.put_if(puts, alive={run_key(run.id): ask.run_ttl, dedup_pointer(ask.key): ask.run_ttl}, absent=absent):
        return None
    return Submission(job, run, "cache", False)


async def reuse(aio: AsyncStore, *, settings: Settings, client: str, priority: Priority, sha256: str,
                envelope: Callable[..., dict], options: dict, metadata: dict, model: str, idempotency_key: str | None,
                check: Callable[[float, int], object]) -> Submission | None:
    """``_reuse`` on the event loop, in two round trips and no thread: the dedup pointer of a finished result
    carries the audio's duration and channels, so the job is checked (``check(duration_s, channels)``
    raises where the request is refused) and written, and the run read, without reading the run first.
    ``envelope(duration_s=, channels=)`` is the job's ``input`` given the audio's duration and channels (the
    upload is not probed: its run's audio is the same bytes). None: anything else (a miss, a live run, an
    older pointer, a repeated Idempotency-Key, a run gone meanwhile), for ``submit`` in a thread to decide."""
    ask = _ask(settings=settings, client=client, priority=priority, sha256=sha256, options=options, metadata=metadata,
               model=model, webhook=None, idempotency_key=idempotency_key)
    pointer, *earlier = await aio.get_many(ask.lookups())
    if not points_to_result(pointer) or earlier not in ([], [None]):
        return None
    check(pointer["duration_s"], pointer["channels"])
    input = envelope(duration_s=pointer["duration_s"], channels=pointer["channels"])
    job = ask.new_job(input=input, run_id=pointer["run_id"], created_at=time.time(), dedup="cache")
    puts, absent = ask.reuse_writes(job)
    run_doc = await aio.put_if(puts, alive={run_key(job.run_id): ask.run_ttl, dedup_pointer(ask.key): ask.run_ttl},
                               absent=absent, read=run_key(job.run_id))
    run = run_from_doc(run_doc, job.run_id)
    if run is None:
        return None
    return Submission(job, run, "cache", False)


def _idempotent(tx: Tx, idem_key: str, fingerprint: str) -> Submission | None:
    """The job an earlier request with this Idempotency-Key made; Conflict if that request differed."""
    earlier = tx.get(idem_key)
    if earlier is None:
        return None
    if earlier["fingerprint"] != fingerprint:
        raise Conflict("this Idempotency-Key was used for a different request; use a new key",
                       code="idempotency_key_reused")
    job = job_from_doc(tx.get(job_key(earlier["job_id"])), earlier["job_id"])
    return None if job is None else Submission(job, get_run(tx, job.run_id), "idempotent", False)


def mark_filed(store: Store, *, run_id: str) -> Run | None:
    """The new run's audio is in the blob store: the run enters its client's backlog (the caller dispatches).
    Returns the run as it is now."""

    def tx_filed(tx: Tx) -> Run | None:
        run = get_run(tx, run_id)
        if run is not None:
            lifecycle.filed(tx, run)
        return run

    return store.transact(tx_filed)


def abandon_run(store: Store, *, run_id: str, error: dict) -> None:
    """A run whose message could not be published, or whose audio could not be filed: fail it and
    forget its dedup entry."""
    store.transact(lambda tx: lifecycle.fail_if_live(tx, run_id, error, only_owner=None))
