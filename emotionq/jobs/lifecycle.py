"""A run's lifecycle: every transition of its state, each a step of the caller's store transaction.

Each checks the state it leaves, and moves in the same step what depends on it: the queue's depth and
the client's count of waiting runs, the run's place in the scheduler (``scheduler.backlog``), its
lease, and the dedup pointer that lets identical asks find it. Nothing else changes a run's state.

=========  ======================================================  =====================================
event      from → to                                                also
=========  ======================================================  =====================================
submit     (none) → queued, held (``Filing``)                       depth +1, dedup pointer set
join       queued | running → same (a high join raises a low run)   a raise moves depth low → high
filed      queued ``Filing`` → queued ``Backlog``                   enters its client's backlog
dispatched queued ``Backlog`` → queued ``Dispatched``                counted in the broker (``ahead``)
returned   queued (not in a backlog) → queued ``Backlog``           back at the front of its backlog
claimed    queued → running; running (own task, again) → running  depth −1 (from queued), lease set
succeeded  running → succeeded                                      dedup pointer kept for the result
failed     queued | running → failed                                depth −1 (from queued), pointer gone
canceled   queued | running → canceled                              depth −1 (from queued), pointer gone
requeued   running → queued ``Retrying``                             depth +1
expired    running, lease past → failed ``worker_lost``              as failed
=========  ======================================================  =====================================

succeeded, failed and canceled are terminal: no event leaves them.

The queue's depth (``depth``, per priority: every queued run) is kept here and nowhere else; it bounds
admissions (``max_queued_<priority>``) and is what ``/metrics`` shows. The scheduler's turns count
something else: the runs in line to start (``scheduler.backlog.in_line``).
"""

from __future__ import annotations

import time

from emotionq.errors import Overloaded
from emotionq.jobs.domain import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Filing, Retrying, Run
from emotionq.jobs.records import dedup_pointer, get_run, pointed_run, pointer_doc, put_run, result_pointer
from emotionq.jobs.scheduler import backlog, leases, limits, position
from emotionq.settings import Settings
from emotionq.store import Store, Tx

DEPTH_KEY = "depth"
WORKER_LOST = "worker_lost"


def worker_lost(message: str, *, retryable: bool) -> dict:
    """The error of a run that lost its worker: it vanished (retryable), or kept dying (not)."""
    return {"code": WORKER_LOST, "message": message, "retryable": retryable}


VANISHED = worker_lost("the worker stopped answering before the job finished", retryable=True)


def queue_depth(store: Store) -> dict[str, int]:
    """Runs waiting to start, per priority."""
    return {"high": 0, "low": 0, **(store.get(DEPTH_KEY) or {})}


def depth(tx: Tx, priority: str) -> int:
    return (tx.get(DEPTH_KEY) or {}).get(priority, 0)


def _count(tx: Tx, priority: str, delta: int, *, client: str | None = None) -> int:
    """Move the depth of ``priority`` (and ``client``'s count of waiting runs, if given) by ``delta``;
    returns the depth before."""
    limits.count_waiting(tx, client, delta)
    counts = {"high": 0, "low": 0, **(tx.get(DEPTH_KEY) or {})}
    before = counts[priority]
    counts[priority] = max(0, before + delta)
    tx.put(DEPTH_KEY, counts)
    return before


def _leaves(run: Run, *states: str) -> None:
    if run.state not in states:
        raise ValueError(f"run {run.id} is {run.state}; this transition leaves only {'/'.join(states)}")


def submit(tx: Tx, run: Run, *, settings: Settings, until: float, ttl: int) -> None:
    """A new run, queued and held until its audio is filed; Overloaded past the queue's limit, RateLimited
    past its client's."""
    limits.check_waiting(tx, run.client, settings)
    before = _count(tx, run.priority, +1, client=run.client)
    if before >= settings.max_queued(run.priority):
        raise Overloaded(f"{before} {run.priority}-priority jobs are waiting, the most this service queues; "
                         "retry later")
    backlog.hold(tx, run, client=run.client, until=until)
    tx.put(dedup_pointer(run.key), pointer_doc(run.id), ttl=ttl)
    put_run(tx, run, ttl=ttl)


def join(tx: Tx, run: Run, *, job_id: str, priority: str, settings: Settings, ttl: int) -> bool:
    """Attach a job to a live run; True if it moved to the high backlog (the caller dispatches)."""
    _leaves(run, QUEUED, RUNNING)
    run.jobs.append(job_id)
    raised = (priority == "high" and run.priority != "high" and run.state == QUEUED
              and depth(tx, "high") < settings.max_queued_high)
    entered = False
    if raised:
        place = run.queue
        client = getattr(place, "client", None) or run.client
        backlog.leave(tx, run)  # from the low backlog, or from the low messages in the broker
        run.priority = "high"  # dispatched at high now; if its low message comes first, that one wins
        _count(tx, "low", -1)
        _count(tx, "high", +1)
        if isinstance(place, Filing):  # its audio is still being filed: it enters the high backlog then
            backlog.hold(tx, run, client=client, until=place.until)
        else:
            backlog.enter(tx, run, client=client)
            entered = True
    put_run(tx, run, ttl=ttl)
    return entered


def filed(tx: Tx, run: Run) -> bool:
    """Its audio is filed: into its client's backlog if it is still held; True if it entered."""
    if run.state != QUEUED or not backlog.filed(tx, run):
        return False
    put_run(tx, run)
    return True


def dispatched(tx: Tx, run: Run, *, publish_by: float) -> None:
    """Taken from its backlog (``backlog.take``) to be published."""
    _leaves(run, QUEUED)
    backlog.dispatched(tx, run, priority=run.priority, publish_by=publish_by)
    run.published_at = None
    put_run(tx, run)


def returned(tx: Tx, run: Run) -> None:
    """Back to the front of its client's backlog: its publish failed or was lost, or it must wait."""
    _leaves(run, QUEUED)
    backlog.back(tx, run)
    put_run(tx, run)


def claimed(tx: Tx, run: Run, *, task_id: str, worker: str, hard_limit_s: float, grace_s: float) -> None:
    """Taken by a task (again, if it is the task's own redelivered message); its lease runs from now."""
    _leaves(run, QUEUED, RUNNING)
    if run.state == QUEUED:
        backlog.leave(tx, run)
        run.deliveries = 1
        _count(tx, run.priority, -1, client=run.client)
    else:
        run.deliveries += 1
    now = time.time()
    run.state, run.owner, run.worker, run.deadline = RUNNING, task_id, worker, now + hard_limit_s + grace_s
    run.started_at = run.started_at or now
    put_run(tx, run)
    leases.track(tx, run)  # so the janitor finds it if its worker vanishes


def succeeded(tx: Tx, run: Run, *, output: dict, batch_size: int, settings: Settings) -> None:
    """Its result recorded; later identical asks reuse it for ``result_ttl_seconds``."""
    _leaves(run, RUNNING)
    run.state, run.output, run.finished_at, run.deadline = SUCCEEDED, output, time.time(), None
    position.record_service(tx, run, batch_size=batch_size)
    put_run(tx, run, ttl=max(settings.job_ttl_seconds, settings.result_ttl_seconds))
    tx.put(dedup_pointer(run.key), result_pointer(run), ttl=settings.result_ttl_seconds)


def failed(tx: Tx, run: Run, error: dict) -> Run:
    """Failed with ``error``; the next identical ask starts afresh."""
    _leaves(run, QUEUED, RUNNING)
    if run.state == QUEUED:
        _count(tx, run.priority, -1, client=run.client)
        backlog.leave(tx, run)
    run.state, run.error, run.finished_at, run.deadline = FAILED, error, time.time(), None
    put_run(tx, run)
    _forget(tx, run)
    return run


def canceled(tx: Tx, run: Run) -> Run:
    """No job wants it any more: a queued run at once, a running one by its worker between passes."""
    _leaves(run, QUEUED, RUNNING)
    if run.state == QUEUED:
        _count(tx, run.priority, -1, client=run.client)
        backlog.leave(tx, run)
    run.state, run.finished_at, run.deadline = CANCELED, time.time(), None
    put_run(tx, run)
    _forget(tx, run)
    return run


def requeued(tx: Tx, run: Run) -> None:
    """Back to queued for a retry of a transient fault; its message goes to the broker again."""
    _leaves(run, RUNNING)
    run.state, run.owner, run.deadline, run.retries = QUEUED, None, None, run.retries + 1
    run.queue = Retrying()
    _count(tx, run.priority, +1, client=run.client)
    put_run(tx, run)


def expired(tx: Tx, run: Run) -> Run:
    """Its lease passed while it ran: its worker vanished."""
    _leaves(run, RUNNING)
    return failed(tx, run, VANISHED)


def fail_if_live(tx: Tx, run_id: str, error: dict, *, only_owner: str | None, run: Run | None = None) -> Run | None:
    """``failed``, unless it has ended (or, with ``only_owner``, belongs to another task); returns the run if it
    failed now (or had failed by this owner's own earlier commit, whose reply the store lost)."""
    run = run or get_run(tx, run_id)
    if run is not None and run.state == FAILED and only_owner and run.owner == only_owner:
        return run
    if run is None or run.state in TERMINAL:
        return None
    if only_owner is not None and run.owner not in (None, only_owner):
        return None
    return failed(tx, run, error)


def _forget(tx: Tx, run: Run) -> None:
    """Drop the dedup pointer to ``run`` (the next identical upload starts afresh)."""
    if pointed_run(tx.get(dedup_pointer(run.key))) == run.id:
        tx.delete(dedup_pointer(run.key))
