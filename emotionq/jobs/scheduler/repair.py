"""Repairs of the scheduler after a process died midway, each a named step the tick calls on its own:

- ``unconfirmed``: runs dispatched whose publisher died before the broker confirmed them go back to
  their backlogs (after ``ORPHAN_AFTER_S``);
- ``unfiled``: new runs whose filer (an API process) died before saying their audio is filed enter
  their backlogs (after ``FILING_TIMEOUT_S``);
- ``lost_messages``: runs dispatched long ago, not started, while the broker's queue is empty, lost
  their messages (a purge by hand, a queue recreated) and go back to their backlogs.
"""

from __future__ import annotations

import logging
import time

from celery import Celery

from emotionq.jobs import lifecycle
from emotionq.jobs.domain import QUEUED
from emotionq.jobs.records import get_run
from emotionq.jobs.scheduler import backlog
from emotionq.jobs.scheduler.dispatch import put_back
from emotionq.queues import waiting_messages
from emotionq.store import Store, Tx

log = logging.getLogger(__name__)

LOST_AFTER_S = 10.0  # a dispatched run not started this long while the broker's queue is empty lost its message
MOST_PER_STEP = 64


def unconfirmed(store: Store) -> int:
    """Put back in their backlogs the runs dispatched but never confirmed (their publisher died)."""
    repaired = 0
    for run_id, _ in store.due(backlog.PUBLISHING_INDEX, until=time.time(), limit=MOST_PER_STEP):
        def tx_repair(tx: Tx, run_id=run_id) -> bool:
            tx.index(backlog.PUBLISHING_INDEX, run_id, None)
            run = get_run(tx, run_id)
            if run is None or run.published_at or run.state != QUEUED:
                return False
            put_back(tx, run_id)
            return True

        repaired += store.transact(tx_repair)
    if repaired:
        log.warning("%d dispatched runs were never confirmed by the broker; back in their backlogs", repaired)
    return repaired


def unfiled(store: Store) -> int:
    """Put in their backlogs the new runs whose filer (an API process) died before saying the audio is filed."""
    entered = 0
    for run_id, _ in store.due(backlog.FILING_INDEX, until=time.time(), limit=MOST_PER_STEP):
        def tx_enter(tx: Tx, run_id=run_id) -> bool:
            tx.index(backlog.FILING_INDEX, run_id, None)
            run = get_run(tx, run_id)
            return run is not None and lifecycle.filed(tx, run)

        entered += store.transact(tx_enter)
    if entered:
        log.warning("%d new runs were never said to have their audio filed; in their backlogs now", entered)
    return entered


def lost_messages(store: Store, celery: Celery) -> int:
    """Put back in their backlogs the runs dispatched ``LOST_AFTER_S`` ago and still not started while the
    broker's queue holds no message: theirs were lost (a purge by hand, a queue deleted or recreated).
    Without this their count in the broker (``ahead``) would hold the dispatcher back for ever."""
    until = time.time() - LOST_AFTER_S
    old = [(p, run_id) for p in ("high", "low")
           for run_id, _ in store.due(backlog.dispatched_index(p), until=until, limit=MOST_PER_STEP)]
    if not old or waiting_messages(celery) != 0:
        return 0
    for priority, run_id in old:
        def tx_reclaim(tx: Tx, run_id: str = run_id, priority: str = priority) -> None:
            tx.index(backlog.dispatched_index(priority), run_id, None)  # put_back puts it back if it still waits
            put_back(tx, run_id)

        store.transact(tx_reclaim)
    log.warning("%d dispatched runs lost their messages (the broker's queue is empty); back in their backlogs",
                len(old))
    return len(old)
