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

from emotionq.errors import Conflict, Overloaded
from emotionq.jobs import blobrefs
from emotionq.jobs.records import (
    QUEUED,
    RUNNING,
    SUCCEEDED,
    count,
    dedup_key,
    dedup_pointer,
    job_key,
    mark_failed,
    new_id,
    run_key,
    waiting,
)
from emotionq.jobs.scheduler import backlog, limits
from emotionq.settings import Priority, Settings
from emotionq.store import Store, Tx

FILING_TIMEOUT_S = 120.0  # a new run whose audio is still not filed this long after its submission lost its filer


@dataclass(frozen=True)
class Submission:
    job: dict
    run: dict
    outcome: str  # "new" | "coalesced" | "cache" | "idempotent"
    publish: bool  # the caller must dispatch: work entered a backlog (a new run, or one raised to high)


def submit(store: Store, *, settings: Settings, client: str, priority: Priority, input: dict, options: dict,
           metadata: dict, model: str, webhook: dict | None = None, idempotency_key: str | None = None) -> Submission:
    """Create a job and attach it to a run, atomically with every concurrent submission (a known result
    first without a transaction: ``_reuse``)."""
    key = dedup_key(sha256=input["sha256"], model=model, options=options)
    fingerprint = dedup_key(sha256=input["sha256"], model=model,
                            options={**options, "priority": priority, "webhook": webhook, "metadata": metadata})
    idem_key = f"idem:{client}:{idempotency_key}" if idempotency_key else None
    job_id, fresh_run_id = new_id("job"), new_id("run")
    run_ttl = max(settings.job_ttl_seconds, settings.result_ttl_seconds)

    new_job = partial(_job, {"id": job_id, "client": client, "priority": priority, "canceled_at": None,
                             "input": input, "options": options, "metadata": metadata, "webhook": webhook})
    reused = _reuse(store, key=key, idem=(idem_key, {"job_id": job_id, "fingerprint": fingerprint}), new_job=new_job,
                    job_ttl=settings.job_ttl_seconds, run_ttl=run_ttl)
    if reused is not None:
        return reused

    def tx_submit(tx: Tx) -> Submission:
        now = time.time()
        earlier = _idempotent(tx, idem_key, fingerprint) if idem_key else None
        if earlier is not None:
            return earlier
        pointer = tx.get(dedup_pointer(key))
        run = tx.get(run_key(pointer["run_id"])) if pointer else None
        if run is not None and run["state"] == SUCCEEDED:
            outcome, publish = "cache", False
        elif run is not None and run["state"] in (QUEUED, RUNNING):
            outcome, publish = "coalesced", _join(tx, run, job_id=job_id, priority=priority, settings=settings)
        else:
            outcome, publish = "new", True
            run = _new_run(tx, run_id=fresh_run_id, key=key, job_id=job_id, priority=priority, model=model,
                           input=input, options=options, settings=settings, now=now, client=client)
            backlog.hold(tx, run, client=client, until=now + FILING_TIMEOUT_S)  # enters once its audio is filed
            tx.put(dedup_pointer(key), {"run_id": run["id"]}, ttl=run_ttl)
        if outcome in ("new", "coalesced"):  # the run needs the audio: hold it (a new run learns its name)
            gen = blobrefs.hold(tx, sha256=input["sha256"], run_id=run["id"] if outcome == "new" else None,
                                now=now, retention_s=settings.effective_blob_retention_s)
            if outcome == "new":
                run["blob"] = gen
        if outcome == "cache":  # unchanged: only kept alive (with the pointer to it) as long as its newest job
            tx.touch(run_key(run["id"]), run_ttl)
            tx.touch(dedup_pointer(key), run_ttl)
        else:
            tx.put(run_key(run["id"]), run, ttl=run_ttl)
        job = new_job(run, outcome, now)
        tx.put(job_key(job_id), job, ttl=settings.job_ttl_seconds)
        if idem_key:
            tx.put(idem_key, {"job_id": job_id, "fingerprint": fingerprint}, ttl=settings.job_ttl_seconds)
        return Submission(job, run, outcome, publish)

    return store.transact(tx_submit)


def _job(fields: dict, run: dict, outcome: str, now: float) -> dict:
    """The job document: the request's ``fields``, attached to ``run`` by ``outcome``."""
    return {**fields, "run_id": run["id"], "created_at": now, "dedup": None if outcome == "new" else outcome}


def _reuse(store: Store, *, key: str, idem: tuple[str | None, dict], new_job: Callable[[dict, str, float], dict],
           job_ttl: int, run_ttl: int) -> Submission | None:
    """A finished result answered without a transaction: most repeats of known audio end here. A succeeded
    run never changes again, so the job is written if the run (and its dedup pointer) still exist, and
    the Idempotency-Key is new, without watching them: the many uploads of one popular recording do not
    make each other's transactions run again. None: not a cache hit (or the run went meanwhile), or a
    repeated Idempotency-Key; the transaction decides those."""
    idem_key, idem_doc = idem
    pointer, *earlier = store.get_many([dedup_pointer(key), *([idem_key] if idem_key else [])])
    if pointer is None or earlier not in ([], [None]):  # a miss, or a key used before: the transaction decides
        return None
    run = store.get(run_key(pointer["run_id"]))
    if run is None or run["state"] != SUCCEEDED:
        return None
    job = new_job(run, "cache", time.time())
    puts = {job_key(job["id"]): (job, job_ttl), **({idem_key: (idem_doc, job_ttl)} if idem_key else {})}
    if not store.put_if(puts, alive={run_key(run["id"]): run_ttl, dedup_pointer(key): run_ttl},
                        absent=[idem_key] if idem_key else []):
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
    job = tx.get(job_key(earlier["job_id"]))
    return None if job is None else Submission(job, tx.get(run_key(job["run_id"])), "idempotent", False)


def _join(tx: Tx, run: dict, *, job_id: str, priority: Priority, settings: Settings) -> bool:
    """Attach a job to a live run; True if it moved to the high backlog (the caller dispatches)."""
    run["jobs"].append(job_id)
    if (priority == "high" and run["priority"] != "high" and run["state"] == QUEUED
            and waiting(tx, "high") < settings.max_queued_high):
        place = run.get("queue") or {}
        client = place.get("client") or run.get("client", "")
        backlog.leave(tx, run)  # from the low backlog, or from the low messages in the broker
        run["priority"] = "high"  # dispatched at high now; if its low message comes first, that one wins
        count(tx, "low", -1)
        count(tx, "high", +1)
        if place.get("at") == backlog.FILING:  # its audio is still being filed: it enters the high backlog then
            backlog.hold(tx, run, client=client, until=place["until"])
            return False
        backlog.enter(tx, run, client=client)
        return True
    return False


def _new_run(tx: Tx, *, run_id: str, key: str, job_id: str, priority: Priority, model: str, input: dict,
             options: dict, settings: Settings, now: float, client: str) -> dict:
    """A queued run for the job, counted as waiting; Overloaded past the priority's queue limit."""
    limits.check_waiting(tx, client, settings)
    waiting_now = count(tx, priority, +1, client=client)
    if waiting_now >= settings.max_queued(priority):
        raise Overloaded(f"{waiting_now} {priority}-priority jobs are waiting, the most this service queues; "
                         "retry later")
    return {
        "id": run_id, "key": key, "sha256": input["sha256"], "model": model,
        "options": options, "duration_s": input["duration_s"], "channels": input.get("channels", 1),
        "priority": priority, "client": client,
        "state": QUEUED, "jobs": [job_id], "created_at": now, "started_at": None,
        "finished_at": None, "published_at": None, "owner": None, "deliveries": 0, "retries": 0,
        "deadline": None, "worker": None, "output": None, "error": None,
    }


def mark_filed(store: Store, *, run_id: str) -> dict | None:
    """The new run's audio is in the blob store: the run enters its client's backlog (the caller dispatches).
    Returns the run as it is now."""

    def tx_filed(tx: Tx) -> dict | None:
        run = tx.get(run_key(run_id))
        if run is not None and run["state"] == QUEUED and backlog.filed(tx, run):
            tx.put(run_key(run_id), run)
        return run

    return store.transact(tx_filed)


def abandon_run(store: Store, *, run_id: str, error: dict) -> None:
    """A run whose message could not be published, or whose audio could not be filed: fail it and
    forget its dedup entry."""
    store.transact(lambda tx: mark_failed(tx, run_id, error, only_owner=None))
