"""Purging one priority from the inference queue, and failing its jobs so that none is lost silently.

Both priorities share ONE queue (``emotionq.queues``), so ``celery purge -Q emotion``
would drop them all and leave their jobs ``queued`` for ever. Here every waiting
message is taken, unacknowledged: one of the purged priority whose run still waits
at that priority has the run failed (code ``purged``, webhooks told) and is then
acked; one whose run has already ended is dropped as stale; every other message
goes back to the queue. Fail first, ack second: if this process dies in between,
RabbitMQ returns the message and a worker skips it as finished.

Most waiting runs are not in the broker at all but in the store's backlogs (``emotionq.jobs.scheduler.backlog``):
those of the priority are failed too, as many as waited when the purge began.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from amqp.exceptions import NotFound
from celery import Celery
from kombu.exceptions import ChannelError

from emotionq.jobs import lifecycle
from emotionq.jobs.access import take_back
from emotionq.jobs.domain import Run
from emotionq.jobs.records import get_run
from emotionq.jobs.scheduler import backlog
from emotionq.queues import INFERENCE, INFERENCE_QUEUES, message_priority, read_infer
from emotionq.settings import Priority
from emotionq.store import Store, Tx


@dataclass
class Purged:
    failed: list[str] = field(default_factory=list)  # runs failed with code "purged"
    stale: int = 0  # messages of the priority whose runs had already ended: dropped
    kept: int = 0  # messages of the other priority, or of runs running or raised to it: left queued


def purge_priority(celery: Celery, store: Store, *, priority: Priority,
                   notify: Callable[[dict, str], None]) -> Purged:
    """Remove the waiting messages of ``priority``; ``notify(run, "job.failed")`` for each run failed."""
    error = {"code": "purged", "message": f"an operator purged the {priority}-priority queue before the job "
             "started; submit it again", "retryable": True}
    result = Purged()
    waiting_in_store = sum(backlog.turns(store, priority)["counts"].values())
    for queue in INFERENCE_QUEUES:
        _purge_queue(celery, store, queue, priority=priority, error=error, result=result, notify=notify)
    for _ in range(waiting_in_store):  # what waits now; later uploads are not purged
        run = store.transact(lambda tx: _fail_next(tx, priority, error))
        if run is None:
            break
        result.failed.append(run.id)
        notify(run, "job.failed")
    return result


def _purge_queue(celery: Celery, store: Store, queue, *, priority: Priority, error: dict, result: Purged,
                 notify: Callable[[dict, str], None]) -> None:
    """``purge_priority`` on one inference queue (one never declared holds nothing)."""
    held = []
    with celery.connection_for_write() as conn:
        bound = queue(conn.channel())
        try:
            _, waiting, _ = bound.queue_declare(passive=True)
        except (NotFound, ChannelError):
            if queue is INFERENCE:
                raise
            return
        try:
            for _ in range(waiting):  # what waits now; later uploads are not purged
                message = bound.get(no_ack=False, accept=["json"])
                if message is None:  # workers took the rest
                    break
                infer = read_infer(message)
                if infer is None or infer.priority != message_priority(priority):
                    held.append(message)
                    continue
                outcome, run = take_back(store, run_id=infer.run_id, priority=priority, error=error)
                if outcome == "kept":
                    held.append(message)
                    continue
                if outcome == "failed":
                    result.failed.append(run.id)
                    notify(run, "job.failed")
                else:
                    result.stale += 1
                message.ack()
        finally:
            for message in held:  # back where they were; unacked ones would come back anyway on disconnect
                message.requeue()
            result.kept += len(held)


def _fail_next(tx: Tx, priority: Priority, error: dict) -> Run | None:
    """Fail the run whose turn is next in the backlogs of ``priority``; None when they are empty."""
    while (run_id := backlog.take(tx, priority)) is not None:
        run = get_run(tx, run_id)
        if run is not None:
            run.queue = None  # out of its backlog already
            failed = lifecycle.fail_if_live(tx, run_id, error, only_owner=None, run=run)
            if failed is not None:
                return failed
    return None
