"""Reading and cancelling jobs as their client asks, and taking runs back for ``emotionq purge``."""

from __future__ import annotations

import time

from emotionq.errors import Conflict, NotFound
from emotionq.jobs.records import CANCELED, QUEUED, TERMINAL, count, forget, job_key, mark_failed, run_key
from emotionq.jobs.scheduler import backlog
from emotionq.settings import Priority
from emotionq.store import Store, Tx


def load(store: Store, *, job_id: str, client: str) -> tuple[dict, dict]:
    """A job and its run, as they stand; another client's job is reported as missing. It only reads: a run
    whose worker vanished is failed by the janitor (``emotionq.jobs.scheduler.leases``), not here."""
    job = store.get(job_key(job_id))
    if job is None or job["client"] != client:
        raise NotFound(f"no job {job_id!r}; check the id (jobs are kept for a limited time)")
    run = store.get(run_key(job["run_id"]))
    if run is None:
        raise NotFound(f"job {job_id!r} has expired")
    return job, run


def status_of(job: dict, run: dict) -> str:
    return CANCELED if job["canceled_at"] else run["state"]


def cancel(store: Store, *, job_id: str, client: str) -> None:
    """Cancel a job that has not finished. Its run stops only if no other job still wants it: a queued
    run is canceled here; a running one by its worker, which checks between forward passes
    (``stop_if_unwanted``)."""

    def tx_cancel(tx: Tx) -> None:
        job = tx.get(job_key(job_id))
        if job is None or job["client"] != client:
            raise NotFound(f"no job {job_id!r}")
        run = tx.get(run_key(job["run_id"]))
        if job["canceled_at"] or run is None or run["state"] in TERMINAL:
            raise Conflict("the job has already finished; nothing to cancel", code="job_finished")
        job["canceled_at"] = time.time()
        tx.put(job_key(job_id), job)
        run["jobs"] = [j for j in run["jobs"] if j != job_id]
        if not run["jobs"] and run["state"] == QUEUED:
            run["state"], run["finished_at"] = CANCELED, time.time()
            count(tx, run["priority"], -1, client=run.get("client"))
            backlog.leave(tx, run)
            forget(tx, run)
        tx.put(run_key(run["id"]), run)

    store.transact(tx_cancel)


def take_back(store: Store, *, run_id: str, priority: Priority, error: dict) -> tuple[str, dict | None]:
    """Take back a run whose message an operator is removing from the queue (``emotionq purge``).

    Returns ("failed", run) if the run was waiting at ``priority``: it is failed with ``error`` now;
    ("gone", run) if it had already ended or expired: the message was stale; otherwise ("kept", run):
    it is running or waits at the other priority, and its message must go back to the queue.
    """

    def tx_take_back(tx: Tx) -> tuple[str, dict | None]:
        run = tx.get(run_key(run_id))
        if run is None or run["state"] in TERMINAL:
            return "gone", run
        if run["state"] != QUEUED or run["priority"] != priority:
            return "kept", run
        return "failed", mark_failed(tx, run_id, error, only_owner=None, run=run)

    return store.transact(tx_take_back)
