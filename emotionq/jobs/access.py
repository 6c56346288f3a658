"""Reading and cancelling jobs as their client asks, and taking runs back for ``emotionq purge``."""

from __future__ import annotations

import time

from emotionq.errors import Conflict, NotFound
from emotionq.jobs import lifecycle
from emotionq.jobs.domain import QUEUED, TERMINAL, Job, Run
from emotionq.jobs.records import get_job, get_run, put_job, put_run
from emotionq.settings import Priority
from emotionq.store import Store, Tx


def load(store: Store, *, job_id: str, client: str) -> tuple[Job, Run]:
    """A job and its run, as they stand; another client's job is reported as missing. It only reads: a run
    whose worker vanished is failed by the janitor (``emotionq.jobs.running.expire_lease``), not here."""
    job = get_job(store, job_id)
    if job is None or job.client != client:
        raise NotFound(f"no job {job_id!r}; check the id (jobs are kept for a limited time)")
    run = get_run(store, job.run_id)
    if run is None:
        raise NotFound(f"job {job_id!r} has expired")
    return job, run


def cancel(store: Store, *, job_id: str, client: str) -> None:
    """Cancel a job that has not finished. Its run stops only if no other job still wants it: a queued
    run is canceled here; a running one by its worker, which checks between forward passes
    (``stop_if_unwanted``)."""

    def tx_cancel(tx: Tx) -> None:
        job = get_job(tx, job_id)
        if job is None or job.client != client:
            raise NotFound(f"no job {job_id!r}")
        run = get_run(tx, job.run_id)
        if job.canceled_at or run is None or run.state in TERMINAL:
            raise Conflict("the job has already finished; nothing to cancel", code="job_finished")
        job.canceled_at = time.time()
        put_job(tx, job)
        run.jobs = [j for j in run.jobs if j != job_id]
        if not run.jobs and run.state == QUEUED:
            lifecycle.canceled(tx, run)
        else:
            put_run(tx, run)

    store.transact(tx_cancel)


def take_back(store: Store, *, run_id: str, priority: Priority, error: dict) -> tuple[str, Run | None]:
    """Take back a run whose message an operator is removing from the queue (``emotionq purge``).

    Returns ("failed", run) if the run was waiting at ``priority``: it is failed with ``error`` now;
    ("gone", run) if it had already ended or expired: the message was stale; otherwise ("kept", run):
    it is running or waits at the other priority, and its message must go back to the queue.
    """

    def tx_take_back(tx: Tx) -> tuple[str, Run | None]:
        run = get_run(tx, run_id)
        if run is None or run.state in TERMINAL:
            return "gone", run
        if run.state != QUEUED or run.priority != priority:
            return "kept", run
        return "failed", lifecycle.failed(tx, run, error)

    return store.transact(tx_take_back)
