"""Leases of running runs: a worker holds its run until the ``deadline`` its claim set (the hard time
limit plus a grace); a run still running past it lost its worker and is failed ``worker_lost``.

Each claim puts the run in the store's ``leases`` index under its deadline, so the janitor finds
expired leases (within ``EMOTIONQ_JANITOR_INTERVAL_S`` of their deadline); reading a job never writes. The
entry stays until the janitor has told the webhooks (``release``): a janitor that dies in between
tells them again, which delivers nothing twice (one delivery record per job and event).
"""

from __future__ import annotations

from emotionq.jobs.records import FAILED, RUNNING, mark_failed, run_key
from emotionq.store import Store, Tx

INDEX = "leases"
WORKER_LOST = "worker_lost"


def track(tx: Tx, run: dict) -> None:
    """Inside a claim's transaction: index the run under its new deadline."""
    tx.index(INDEX, run["id"], run["deadline"])


def expire(store: Store, *, run_id: str, now: float) -> dict | None:
    """Fail the run if its lease has expired; returns the run if it is failed ``worker_lost`` (now, or by
    an earlier call whose webhooks may not have been told), None if there is nothing (more) to do."""

    def tx_expire(tx: Tx) -> dict | None:
        run = tx.get(run_key(run_id))
        if run is None:
            tx.index(INDEX, run_id, None)
            return None
        if run["state"] == RUNNING and run["deadline"] and run["deadline"] > now:
            tx.index(INDEX, run_id, run["deadline"])  # claimed again since: a later deadline
            return None
        if run["state"] == RUNNING:
            return mark_failed(tx, run_id, {
                "code": WORKER_LOST, "message": "the worker stopped answering before the job finished",
                "retryable": True}, only_owner=run["owner"], run=run)
        if run["state"] == FAILED and (run["error"] or {}).get("code") == WORKER_LOST:
            return run
        tx.index(INDEX, run_id, None)  # it ended (or went back to the queue) on its own
        return None

    return store.transact(tx_expire)


def release(store: Store, *, run_id: str) -> None:
    """Drop the run from the index: its expiry has been handled, webhooks told."""
    store.transact(lambda tx: tx.index(INDEX, run_id, None))
