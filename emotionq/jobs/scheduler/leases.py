"""Leases of running runs: a worker holds its run until the ``deadline`` its claim set (the hard time
limit plus a grace); a run still running past it lost its worker and is failed ``worker_lost``.

Each claim puts the run in the store's ``leases`` index under its deadline, so the janitor finds
expired leases (within ``EMOTIONQ_JANITOR_INTERVAL_S`` of their deadline) and fails them
(``emotionq.jobs.running.expire_lease``); reading a job never writes. The entry stays until the
janitor has told the webhooks (``release``): a janitor that dies in between tells them again, which
delivers nothing twice (one delivery record per job and event).
"""

from __future__ import annotations

from emotionq.jobs.domain import Run
from emotionq.store import Store, Tx

INDEX = "leases"


def track(tx: Tx, run: Run) -> None:
    """Inside a claim's transaction: index the run under its new deadline."""
    tx.index(INDEX, run.id, run.deadline)


def due(store: Store, *, now: float, limit: int) -> list[str]:
    """The runs whose lease ended by ``now``, oldest first."""
    return [run_id for run_id, _ in store.due(INDEX, until=now, limit=limit)]


def release_in(tx: Tx, run_id: str) -> None:
    tx.index(INDEX, run_id, None)


def release(store: Store, *, run_id: str) -> None:
    """Drop the run from the index: its expiry has been handled, webhooks told."""
    store.transact(lambda tx: release_in(tx, run_id))
