"""Where a waiting run stands: how many runs will start before it (``position``) and about when it
will be done (``eta_s``), answered on every read of a job without a scan of the queue.

For a run at rank k (0-based) in client c's backlog of priority p, the runs that start before it are:
every waiting high run (if p is low), the runs of p already in the broker (``ahead``), the k before
it in c's backlog, and from every other client d with work at p, min(n_d, k + 1 if d's turn comes
before c's in the current round, else k). A run already in the broker counts the waiting high runs
(if low) and the runs dispatched before it. Cost: two documents (the turns of both priorities), one
rank (ZRANK in Redis, an indexed COUNT in SQLite) and a sum over the clients with work at p.

``eta_s`` is (position + 1) × the recent mean service time per run of the run's model (an EWMA the
workers update as runs complete, per run of a batch) / the live workers: the time until it should
be finished, or None until a run has been measured or while no worker is live.
"""

from __future__ import annotations

from emotionq.jobs.domain import QUEUED, Backlog, Dispatched, Run
from emotionq.jobs.records import get_run
from emotionq.jobs.scheduler import backlog, readiness
from emotionq.store import Store, Tx

SERVICE_KEY = "service_s"  # {model: EWMA of seconds per run}
ALPHA = 0.2  # weight of the newest measurement
TRIES = 3


def record_service(tx: Tx, run: Run, *, batch_size: int) -> None:
    """Fold a completed run's time (its share of its batch) into its model's mean service time."""
    if not run.started_at or not run.finished_at:
        return
    seconds = max(0.0, run.finished_at - run.started_at) / max(1, batch_size)
    means = tx.get(SERVICE_KEY) or {}
    before = means.get(run.model)
    means[run.model] = round(seconds if before is None else before + ALPHA * (seconds - before), 4)
    tx.put(SERVICE_KEY, means)


def estimate(store: Store, run: Run) -> dict | None:
    """``{"position": int, "eta_s": float | None}`` for a queued run; None for any other.

    The reads are not one transaction: they are taken again (up to ``TRIES`` times) until the turns
    are the same before and after the rank, so a dispatch in between cannot skew the answer."""
    for _ in range(TRIES):
        if run is None or run.state != QUEUED:
            return None
        turns = {p: backlog.turns(store, p) for p in ("high", "low")}
        before = _before(store, run, turns)
        if before is None:  # it moved meanwhile (dispatched, started): read it again
            run = get_run(store, run.id)
            continue
        if turns == {p: backlog.turns(store, p) for p in ("high", "low")}:
            break
    if before is None:
        return None
    return {"position": before, "eta_s": _eta(store, run, before)}


def _before(store: Store, run: Run, turns: dict) -> int | None:
    place, priority = run.queue, run.priority
    before = backlog.in_line(turns["high"]) if priority == "low" else 0
    if isinstance(place, Dispatched):
        rank = store.rank(backlog.dispatched_index(place.priority), run.id)
        return None if rank is None else before + rank
    if isinstance(place, Backlog):
        k = store.rank(backlog.backlog_index(priority, place.client), run.id)
        if k is None:
            return None
        return before + turns[priority]["ahead"] + k + _other_clients(turns[priority], place.client, k)
    return before + turns[priority]["ahead"]  # held for its audio, or retrying: its message is on its way


def _other_clients(t: dict, client: str, k: int) -> int:
    """Runs of the other clients that start before the run at rank ``k`` of ``client``'s backlog (one pass over
    the ring: a read of a job of one of thousands of clients costs no more than a few lookups each)."""
    order = t["order"]
    if not order or client not in order:
        return sum(min(n, k) for d, n in t["counts"].items() if d != client)
    start = t["next"] % len(order)
    turn: dict[str, int] = {}  # each client's place in the round from the current turn
    for i, name in enumerate(order):
        turn.setdefault(name, (i - start) % len(order))
    mine = turn[client]
    return sum(min(n, k + (other in turn and turn[other] < mine)) for other, n in t["counts"].items()
               if other != client)


def _eta(store: Store, run: Run, position: int) -> float | None:
    mean = (store.get(SERVICE_KEY) or {}).get(run.model)
    workers = len(readiness.live(store))
    if mean is None or not workers:
        return None
    return round((position + 1) * mean / workers, 1)
