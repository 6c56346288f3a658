"""A run's life on a worker: claimed, measured, stopped if unwanted, completed, failed or requeued.

Each step is one store transaction that a retried commit (whose reply the store lost) recognises
as its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from emotionq.jobs.records import (
    CANCELED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    count,
    dedup_pointer,
    forget,
    mark_failed,
    run_key,
)
from emotionq.jobs.scheduler import backlog, leases, position
from emotionq.settings import Settings
from emotionq.store import Store, Tx

LEASE_GRACE_S = 60.0  # a running run's lease: its hard time limit plus this


@dataclass(frozen=True)
class Claim:
    run: dict | None
    go: bool
    reason: str  # "claimed" | "redelivered" | "missing" | "finished" | "duplicate" | "poison" | "deferred"


def claim(store: Store, *, run_id: str, task_id: str, worker: str, max_deliveries: int,
          hard_limit_s: float) -> Claim:
    """Take a run for this task. Duplicate messages, finished runs and poison runs are skipped.

    A low run while high runs wait is *deferred*: back at the front of its backlog, its message
    dropped, so priority is strict whatever order the broker delivers in (embedded mode's is FIFO)."""

    def tx_claim(tx: Tx) -> Claim:
        run = tx.get(run_key(run_id))
        if run is None:
            return Claim(None, False, "missing")
        if run["state"] in TERMINAL:
            return Claim(run, False, "finished")
        if run["state"] == RUNNING and run["owner"] != task_id:
            return Claim(run, False, "duplicate")
        reason = "claimed"
        if run["state"] == RUNNING:  # our own message again: the worker that had it died
            run["deliveries"] += 1
            reason = "redelivered"
            if run["deliveries"] > max_deliveries:
                mark_failed(tx, run_id, {
                    "code": "worker_lost",
                    "message": f"the job stopped its worker {max_deliveries} times; it will not be tried again",
                    "retryable": False,
                }, only_owner=None, run=run)
                return Claim(run, False, "poison")
        elif run["priority"] == "low" and backlog.waiting(tx, "high") > 0:
            if (run.get("queue") or {}).get("at") != backlog.BACKLOG:
                backlog.back(tx, run)
                tx.put(run_key(run_id), run)
            return Claim(run, False, "deferred")
        else:
            backlog.leave(tx, run)
            run["deliveries"] = 1
            count(tx, run["priority"], -1, client=run.get("client"))
        now = time.time()
        run.update(state=RUNNING, owner=task_id, worker=worker, deadline=now + hard_limit_s + LEASE_GRACE_S)
        run["started_at"] = run["started_at"] or now
        tx.put(run_key(run_id), run)
        leases.track(tx, run)  # so the janitor finds it if its worker vanishes
        return Claim(run, True, reason)

    return store.transact(tx_claim)


def record_decoded(store: Store, *, run_id: str, task_id: str, duration_s: float) -> None:
    """Record how long the audio really is, once decoded (a header may claim anything)."""

    def tx_record(tx: Tx) -> None:
        run = tx.get(run_key(run_id))
        if run is not None and run["state"] == RUNNING and run["owner"] == task_id:
            run["decoded_duration_s"] = round(duration_s, 3)
            tx.put(run_key(run_id), run)

    store.transact(tx_record)


def stop_if_unwanted(store: Store, *, run_id: str, task_id: str) -> dict | None:
    """Cancel our running run if every job that wanted it was canceled; returns it if so.

    The worker calls this between forward passes. Deciding and recording in one transaction means
    a job that joins meanwhile either keeps the run going or, once it is canceled, starts a new one.
    """
    run = store.get(run_key(run_id))
    if run is None or run["jobs"] or run["state"] != RUNNING or run["owner"] != task_id:
        return None  # the cheap, usual answer: somebody still wants it

    def tx_stop(tx: Tx) -> dict | None:
        run = tx.get(run_key(run_id))
        if run is None or run["jobs"] or run["state"] != RUNNING or run["owner"] != task_id:
            return None
        run.update(state=CANCELED, finished_at=time.time(), deadline=None)
        tx.put(run_key(run_id), run)
        forget(tx, run)
        return run

    return store.transact(tx_stop)


def complete(store: Store, *, run_id: str, task_id: str, output: dict, settings: Settings) -> dict | None:
    """Record a result; later identical requests reuse it. Returns the run, or None if it was taken from us."""

    def tx_complete(tx: Tx) -> dict | None:
        run = tx.get(run_key(run_id))
        if run is not None and run["state"] == SUCCEEDED and run["owner"] == task_id:
            return run  # our own earlier commit, whose reply the store lost: report it again
        if run is None or run["state"] != RUNNING or run["owner"] != task_id:
            return None
        run.update(state=SUCCEEDED, output=output, finished_at=time.time(), deadline=None)
        position.record_service(tx, run, batch_size=(output.get("timing") or {}).get("batch_size", 1))
        ttl = max(settings.job_ttl_seconds, settings.result_ttl_seconds)
        tx.put(run_key(run_id), run, ttl=ttl)
        tx.put(dedup_pointer(run["key"]), {"run_id": run_id}, ttl=settings.result_ttl_seconds)
        return run

    return store.transact(tx_complete)


def fail(store: Store, *, run_id: str, error: dict, task_id: str | None = None) -> dict | None:
    """Record a failure; the next identical request starts a fresh run. Returns the run if it failed now."""
    return store.transact(lambda tx: mark_failed(tx, run_id, error, only_owner=task_id))


def requeue(store: Store, *, run_id: str, task_id: str) -> None:
    """Put a run back to queued before a retry of a transient fault."""

    def tx_requeue(tx: Tx) -> None:
        run = tx.get(run_key(run_id))
        if run is not None and run["state"] == RUNNING and run["owner"] == task_id:
            run.update(state=QUEUED, owner=None, deadline=None, retries=run["retries"] + 1)
            count(tx, run["priority"], +1, client=run.get("client"))
            tx.put(run_key(run_id), run)

    store.transact(tx_requeue)
