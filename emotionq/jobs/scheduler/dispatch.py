"""The dispatcher: moves runs from the store's backlogs into the broker, high before low, clients in turns.

At most ``ahead`` runs of each priority are in the broker and not yet started (``EMOTIONQ_DISPATCH_AHEAD``;
0 means live workers × batch size), so the order in which runs start is decided here, in the store,
not by the broker's queue: strict priority and fair share hold in embedded mode (whose file broker is
first in, first out) as in distributed mode. No low run is dispatched while any high run waits in a
backlog, and a worker that is handed a low run while high runs wait gives it back (``running.claim``).

A dispatch is a store transaction (take the next run, mark it dispatched) and then the publish. A
failed publish puts the run back at the front of its backlog. One whose publisher died in between is
put back by ``repair.unconfirmed`` once ``ORPHAN_AFTER_S`` passed, and one whose message was lost in the
broker by ``repair.lost_messages``; a duplicate message is harmless (a claim skips a run already running
or finished). Callers: the API after a submission or a cancel, workers after each claim, and every API
process's tick (``emotionq.jobs.scheduler.ticker``), which also repairs.
"""

from __future__ import annotations

import logging
import time

from celery import Celery

from emotionq.errors import Unavailable
from emotionq.inference import registry
from emotionq.jobs import lifecycle
from emotionq.jobs.domain import QUEUED, Dispatched, Run
from emotionq.jobs.records import get_run, put_run
from emotionq.jobs.scheduler import backlog, readiness
from emotionq.queues import publish_run
from emotionq.settings import Settings
from emotionq.store import Store, Tx

log = logging.getLogger(__name__)

ORPHAN_AFTER_S = 60.0  # a dispatched run still unconfirmed this long after lost its publisher
MOST_PER_CALL = 64


def ahead_limit(store: Store, settings: Settings) -> int:
    """How many runs of a priority may wait in the broker: the setting, or live workers × batch size."""
    if settings.dispatch_ahead:
        return settings.dispatch_ahead
    workers = max(1, len(readiness.live(store)))
    return workers * (1 if settings.embedded else settings.batch_size)


def dispatch(store: Store, celery: Celery, settings: Settings) -> int:
    """Hand the broker what it may hold now; returns how many runs were published.

    Raises BrokerUnavailable if a publish failed (that run is back at the front of its backlog)."""
    limit = ahead_limit(store, settings)
    sent = 0
    while sent < MOST_PER_CALL:
        run = store.transact(lambda tx: _next(tx, limit))
        if run is None:
            return sent
        try:
            publish_run(celery, run, settings=settings, job_id=run.jobs[0] if run.jobs else "",
                        families=registry.needed(run.options or {}))
        except Unavailable:
            store.transact(lambda tx: put_back(tx, run.id))
            raise
        _published(store, run.id)
        sent += 1
    return sent


def _next(tx: Tx, limit: int) -> Run | None:
    """The next run to publish, marked dispatched: high while any waits, else low; None if none may go."""
    for priority in ("high", "low"):
        t = backlog.turns(tx, priority)
        if not t["counts"]:
            continue
        if t["ahead"] >= limit:
            return None  # the broker holds enough of this priority; low waits behind waiting high
        while (run_id := backlog.take(tx, priority)) is not None:
            run = get_run(tx, run_id)
            if run is None or run.state != QUEUED:  # ended meanwhile without leaving (expired)
                continue
            lifecycle.dispatched(tx, run, publish_by=time.time() + ORPHAN_AFTER_S)
            return run
    return None


def put_back(tx: Tx, run_id: str) -> None:
    """A dispatched run that still waits back at the front of its backlog (its publish failed, or was lost)."""
    run = get_run(tx, run_id)
    if run is not None and run.state == QUEUED and isinstance(run.queue, Dispatched):
        lifecycle.returned(tx, run)


def _published(store: Store, run_id: str) -> None:
    def tx_published(tx: Tx) -> None:
        run = get_run(tx, run_id)
        tx.index(backlog.PUBLISHING_INDEX, run_id, None)
        if run is not None and not run.published_at:
            run.published_at = time.time()
            put_run(tx, run)

    try:
        store.transact(tx_published)
    except Unavailable as exc:  # the message is out; at worst ``repair.unconfirmed`` publishes it again
        log.warning("run %s: could not record its publication: %s", run_id, exc)
