"""A run's life on a worker: claimed, measured, stopped if unwanted, completed, failed or requeued; and
failed ``worker_lost`` once its lease expired (the janitor's sweep).

Each step is one store transaction that a retried commit (whose reply the store lost) recognises
as its own; the state changes themselves are ``emotionq.jobs.lifecycle``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from emotionq.jobs import lifecycle
from emotionq.jobs.domain import FAILED, RUNNING, SUCCEEDED, TERMINAL, Backlog, Run
from emotionq.jobs.records import get_run, put_run
from emotionq.jobs.scheduler import backlog, leases
from emotionq.settings import Settings
from emotionq.store import Store, Tx

LEASE_GRACE_S = 60.0  # a running run's lease: its hard time limit plus this


@dataclass(frozen=True)
class Claim:
    run: Run | None
    go: bool
    reason: str  # "claimed" | "redelivered" | "missing" | "finished" | "duplicate" | "poison" | "deferred"


def claim(store: Store, *, run_id: str, task_id: str, worker: str, max_deliveries: int,
          hard_limit_s: float) -> Claim:
    """Take a run for this task. Duplicate messages, finished runs and poison runs are skipped.

    A low run while high runs wait is *deferred*: back at the front of its backlog, its message
    dropped, so priority is strict whatever order the broker delivers in (embedded mode's is FIFO)."""

    def tx_claim(tx: Tx) -> Claim:
        run = get_run(tx, run_id)
        if run is None:
            return Claim(None, False, "missing")
        if run.state in TERMINAL:
            return Claim(run, False, "finished")
        if run.state == RUNNING and run.owner != task_id:
            return Claim(run, False, "duplicate")
        reason = "claimed"
        if run.state == RUNNING:  # our own message again: the worker that had it died
            reason = "redelivered"
            if run.deliveries >= max_deliveries:
                run.deliveries += 1
                lifecycle.failed(tx, run, lifecycle.worker_lost(
                    f"the job stopped its worker {max_deliveries} times; it will not be tried again",
                    retryable=False))
                return Claim(run, False, "poison")
        elif run.priority == "low" and backlog.in_line(backlog.turns(tx, "high")) > 0:
            if not isinstance(run.queue, Backlog):
                lifecycle.returned(tx, run)
            return Claim(run, False, "deferred")
        lifecycle.claimed(tx, run, task_id=task_id, worker=worker, hard_limit_s=hard_limit_s,
                          grace_s=LEASE_GRACE_S)
        return Claim(run, True, reason)

    return store.transact(tx_claim)


def record_decoded(store: Store, *, run_id: str, task_id: str, duration_s: float) -> None:
    """Record how long the audio really is, once decoded (a header may claim anything)."""

    def tx_record(tx: Tx) -> None:
        run = get_run(tx, run_id)
        if run is not None and run.state == RUNNING and run.owner == task_id:
            run.decoded_duration_s = round(duration_s, 3)
            put_run(tx, run)

    store.transact(tx_record)


def stop_if_unwanted(store: Store, *, run_id: str, task_id: str) -> Run | None:
    """Cancel our running run if every job that wanted it was canceled; returns it if so.

    The worker calls this between forward passes. Deciding and recording in one transaction means
    a job that joins meanwhile either keeps the run going or, once it is canceled, starts a new one.
    """

    def unwanted(run: Run | None) -> bool:
        return run is not None and not run.jobs and run.state == RUNNING and run.owner == task_id

    if not unwanted(get_run(store, run_id)):
        return None  # the cheap, usual answer: somebody still wants it

    def tx_stop(tx: Tx) -> Run | None:
        run = get_run(tx, run_id)
        return lifecycle.canceled(tx, run) if unwanted(run) else None

    return store.transact(tx_stop)


def complete(store: Store, *, run_id: str, task_id: str, output: dict, settings: Settings) -> Run | None:
    """Record a result; later identical requests reuse it. Returns the run, or None if it was taken from us."""

    def tx_complete(tx: Tx) -> Run | None:
        run = get_run(tx, run_id)
        if run is not None and run.state == SUCCEEDED and run.owner == task_id:
            return run  # our own earlier commit, whose reply the store lost: report it again
        if run is None or run.state != RUNNING or run.owner != task_id:
            return None
        lifecycle.succeeded(tx, run, output=output, settings=settings,
                            batch_size=(output.get("timing") or {}).get("batch_size", 1))
        return run

    return store.transact(tx_complete)


def fail(store: Store, *, run_id: str, error: dict, task_id: str | None = None) -> Run | None:
    """Record a failure; the next identical request starts a fresh run. Returns the run if it failed now."""
    return store.transact(lambda tx: lifecycle.fail_if_live(tx, run_id, error, only_owner=task_id))


def requeue(store: Store, *, run_id: str, task_id: str) -> None:
    """Put a run back to queued before a retry of a transient fault."""

    def tx_requeue(tx: Tx) -> None:
        run = get_run(tx, run_id)
        if run is not None and run.state == RUNNING and run.owner == task_id:
            lifecycle.requeued(tx, run)

    store.transact(tx_requeue)


def expire_lease(store: Store, *, run_id: str, now: float) -> Run | None:
    """Fail the run if its lease has expired; returns the run if it is failed ``worker_lost`` (now, or by
    an earlier call whose webhooks may not have been told), None if there is nothing (more) to do."""

    def tx_expire(tx: Tx) -> Run | None:
        run = get_run(tx, run_id)
        if run is None:
            leases.release_in(tx, run_id)
            return None
        if run.state == RUNNING and run.deadline and run.deadline > now:
            leases.track(tx, run)  # claimed again since: a later deadline
            return None
        if run.state == RUNNING:
            return lifecycle.expired(tx, run)
        if run.state == FAILED and (run.error or {}).get("code") == lifecycle.WORKER_LOST:
            return run
        leases.release_in(tx, run_id)  # it ended (or went back to the queue) on its own
        return None

    return store.transact(tx_expire)
