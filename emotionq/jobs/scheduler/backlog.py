"""Backlogs: the runs waiting in the store, one ordered set per client and priority, and the turns
the clients take. The store, not the broker, decides the order in which runs start, in both modes.

A new run enters the backlog of the client that created it (jobs of other clients that join it
share it there), scored by a sequence number of its priority. ``turns:<priority>`` holds the ring
of clients with runs in that backlog, how many each has, whose turn is next, and how many runs of
the priority the dispatcher has handed the broker that no worker has started (``ahead``). A client
that starts to have work joins the ring just before the turn, so it is served within one round.

Every function here is a step of a caller's transaction (``emotionq.jobs.lifecycle`` calls them), and each
run records where it is (``run.queue``: a ``Filing``, ``Backlog`` or ``Dispatched`` place), so that leaving
is exact whatever ends it.
"""

from __future__ import annotations

import time

from emotionq.jobs.domain import Backlog, Dispatched, Filing, Run
from emotionq.store import Store, Tx

PUBLISHING_INDEX = "dispatch:unpublished"  # runs handed to the broker, not yet confirmed, by deadline
FILING_INDEX = "dispatch:filing"  # new runs whose audio is being filed, by the time they enter regardless


def backlog_index(priority: str, client: str) -> str:
    return f"backlog:{priority}:{client}"


def dispatched_index(priority: str) -> str:
    """The runs of ``priority`` in the broker that no worker has started, in the order dispatched."""
    return f"dispatched:{priority}"


def turns_key(priority: str) -> str:
    return f"turns:{priority}"


def turns(tx: Tx | Store, priority: str) -> dict:
    """The turns of ``priority``, read in a transaction (or, for a glance, from the store)."""
    return {"order": [], "counts": {}, "next": 0, "seq": 0, "ahead": 0, **(tx.get(turns_key(priority)) or {})}


def enter(tx: Tx, run: Run, *, client: str, seq: int | None = None) -> None:
    """Put a queued run last in ``client``'s backlog of its priority (or back at ``seq``, its old place)."""
    priority = run.priority
    t = turns(tx, priority)
    if seq is None:
        t["seq"] += 1
        seq = t["seq"]
    if client not in t["counts"]:
        t["order"].insert(min(t["next"], len(t["order"])), client)  # served next: within one round
        t["counts"][client] = 0
    t["counts"][client] += 1
    tx.put(turns_key(priority), t)
    tx.index(backlog_index(priority, client), run.id, float(seq))
    run.queue = Backlog(priority=priority, client=client, seq=seq)


def hold(tx: Tx, run: Run, *, client: str, until: float) -> None:
    """A new run waits for its audio to be filed before it enters ``client``'s backlog (``enter``), so that
    no dispatcher hands a worker a run whose audio is not there yet; at ``until`` it enters anyway (its
    filer died: the worker then finds the audio, filed by a joiner, or fails the run ``audio_missing``)."""
    run.queue = Filing(priority=run.priority, client=client, until=until)
    tx.index(FILING_INDEX, run.id, until)


def filed(tx: Tx, run: Run) -> bool:
    """The run's audio is filed: into its client's backlog, if it is still held; True if it entered."""
    place = run.queue
    if not isinstance(place, Filing):
        return False
    tx.index(FILING_INDEX, run.id, None)
    run.queue = None
    enter(tx, run, client=place.client)
    return True


def leave(tx: Tx, run: Run) -> None:
    """Take the run out of its backlog, or out of the dispatched count; nothing if it is in neither."""
    place, run.queue = run.queue, None
    if isinstance(place, Filing):
        tx.index(FILING_INDEX, run.id, None)
        return
    if not isinstance(place, (Backlog, Dispatched)):
        return
    t = turns(tx, place.priority)
    if isinstance(place, Backlog):
        tx.index(backlog_index(place.priority, place.client), run.id, None)
        _uncount(t, place.client)
    else:
        t["ahead"] = max(0, t["ahead"] - 1)
        tx.index(PUBLISHING_INDEX, run.id, None)
        tx.index(dispatched_index(place.priority), run.id, None)
    tx.put(turns_key(place.priority), t)


def _uncount(t: dict, client: str) -> None:
    t["counts"][client] = t["counts"].get(client, 1) - 1
    if t["counts"][client] <= 0:
        del t["counts"][client]
        if client in t["order"]:
            i = t["order"].index(client)
            t["order"].pop(i)
            if i < t["next"]:
                t["next"] -= 1
        t["next"] = t["next"] % len(t["order"]) if t["order"] else 0


def take(tx: Tx, priority: str) -> str | None:
    """The run whose turn it is at ``priority``, out of its backlog (the turn moves on); None if none."""
    t = turns(tx, priority)
    while t["order"]:
        t["next"] %= len(t["order"])
        client = t["order"][t["next"]]
        head = tx.first(backlog_index(priority, client), 1)
        if not head:  # counts and set disagree (cannot happen; repaired rather than stuck)
            t["counts"][client] = 1
            _uncount(t, client)
            continue
        run_id = head[0][0]
        tx.index(backlog_index(priority, client), run_id, None)
        t["next"] += 1
        _uncount(t, client)
        tx.put(turns_key(priority), t)
        return run_id
    tx.put(turns_key(priority), t)
    return None


def dispatched(tx: Tx, run: Run, *, priority: str, publish_by: float) -> None:
    """Record that the run (already out of its backlog: ``take``) is being handed to the broker."""
    t = turns(tx, priority)
    t["ahead"] += 1
    tx.put(turns_key(priority), t)
    now = time.time()
    was = run.queue
    run.queue = Dispatched(priority=priority, since=now, client=getattr(was, "client", None),
                           seq=getattr(was, "seq", None))
    tx.index(PUBLISHING_INDEX, run.id, publish_by)
    tx.index(dispatched_index(priority), run.id, now)  # by time: the order dispatched, and how long ago


def back(tx: Tx, run: Run) -> None:
    """A dispatched run back to the front of its client's backlog (its publish failed, or it must wait)."""
    place = run.queue
    leave(tx, run)
    enter(tx, run, client=getattr(place, "client", None) or run.client, seq=getattr(place, "seq", None))


def in_line(t: dict) -> int:
    """Runs in line to start at the priority of the turns ``t``: in its backlogs, or in the broker and not
    started. (The queue's depth, which also counts runs held for their audio or retrying, is
    ``emotionq.jobs.lifecycle.depth``.)"""
    return sum(t["counts"].values()) + t["ahead"]
