"""The dispatcher: moves runs from the store's backlogs into the broker, high before low, clients in turns.

At most ``ahead`` runs of each priority are in the broker and not yet started (``EMOTIONQ_DISPATCH_AHEAD``;
0 means live workers × batch size), so the order in which runs start is decided here, in the store,
not by the broker's queue: strict priority and fair share hold in embedded mode (whose file broker is
first in, first out) as in distributed mode. No low run is dispatched while any high run waits in a
backlog, and a worker that is handed a low run while high runs wait gives it back (``running.claim``).

A dispatch is a store transaction (take the next run, mark it dispatched) and then the publish. A
failed publish puts the run back at the front of its backlog. One whose publisher died in between is
put back by ``repair`` once ``ORPHAN_AFTER_S`` passed, and one whose message was lost in the broker by
``reclaim_lost``; a duplicate message is harmless (a claim skips
a run already running or finished). Callers: the API after a submission or a cancel, workers after
each claim, and every API process's tick (``Ticker``), which also repairs.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery

import emotionq.worker.readiness as readiness
from emotionq.errors import EmotionQError, Unavailable
from emotionq.jobs import backlog
from emotionq.jobs.records import QUEUED, run_key
from emotionq.queues import publish_run, waiting_messages
from emotionq.settings import Settings
from emotionq.store import Store, Tx

log = logging.getLogger(__name__)

ORPHAN_AFTER_S = 60.0  # a dispatched run still unconfirmed this long after lost its publisher
LOST_AFTER_S = 10.0  # a dispatched run not started this long while the broker's queue is empty lost its message
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
            publish_run(celery, run, settings=settings, job_id=run["jobs"][0] if run["jobs"] else "")
        except Unavailable:
            store.transact(lambda tx: _back(tx, run["id"]))
            raise
        _published(store, run["id"])
        sent += 1
    return sent


def _next(tx: Tx, limit: int) -> dict | None:
    """The next run to publish, marked dispatched: high while any waits, else low; None if none may go."""
    for priority in ("high", "low"):
        t = backlog.turns(tx, priority)
        if not t["counts"]:
            continue
        if t["ahead"] >= limit:
            return None  # the broker holds enough of this priority; low waits behind waiting high
        while (run_id := backlog.take(tx, priority)) is not None:
            run = tx.get(run_key(run_id))
            if run is None or run["state"] != QUEUED:  # ended meanwhile without leaving (expired)
                continue
            backlog.dispatched(tx, run, priority=priority, publish_by=time.time() + ORPHAN_AFTER_S)
            run["published_at"] = None
            tx.put(run_key(run_id), run)
            return run
    return None


def _back(tx: Tx, run_id: str) -> None:
    run = tx.get(run_key(run_id))
    if run is not None and run["state"] == QUEUED and (run.get("queue") or {}).get("at") == backlog.DISPATCHED:
        backlog.back(tx, run)
        tx.put(run_key(run_id), run)


def _published(store: Store, run_id: str) -> None:
    def tx_published(tx: Tx) -> None:
        run = tx.get(run_key(run_id))
        tx.index(backlog.PUBLISHING_INDEX, run_id, None)
        if run is not None and not run.get("published_at"):
            run["published_at"] = time.time()
            tx.put(run_key(run_id), run)

    try:
        store.transact(tx_published)
    except Unavailable as exc:  # the message is out; at worst ``repair`` publishes it again
        log.warning("run %s: could not record its publication: %s", run_id, exc)


def repair(store: Store) -> int:
    """Put back in their backlogs the runs dispatched but never confirmed (their publisher died)."""
    repaired = 0
    for run_id, _ in store.due(backlog.PUBLISHING_INDEX, until=time.time(), limit=MOST_PER_CALL):
        def tx_repair(tx: Tx, run_id=run_id) -> bool:
            tx.index(backlog.PUBLISHING_INDEX, run_id, None)
            run = tx.get(run_key(run_id))
            if run is None or run.get("published_at") or run["state"] != QUEUED:
                return False
            _back(tx, run_id)
            return True

        repaired += store.transact(tx_repair)
    if repaired:
        log.warning("%d dispatched runs were never confirmed by the broker; back in their backlogs", repaired)
    return repaired + _unheld(store)


def _unheld(store: Store) -> int:
    """Put in their backlogs the new runs whose filer (an API process) died before saying the audio is filed."""
    entered = 0
    for run_id, _ in store.due(backlog.FILING_INDEX, until=time.time(), limit=MOST_PER_CALL):
        def tx_enter(tx: Tx, run_id=run_id) -> bool:
            tx.index(backlog.FILING_INDEX, run_id, None)
            run = tx.get(run_key(run_id))
            if run is None or run["state"] != QUEUED or not backlog.filed(tx, run):
                return False
            tx.put(run_key(run_id), run)
            return True

        entered += store.transact(tx_enter)
    if entered:
        log.warning("%d new runs were never said to have their audio filed; in their backlogs now", entered)
    return entered


def reclaim_lost(store: Store, celery: Celery) -> int:
    """Put back in their backlogs the runs dispatched ``LOST_AFTER_S`` ago and still not started while the
    broker's queue holds no message: theirs were lost (a purge by hand, a queue deleted or recreated).
    Without this their count in the broker (``ahead``) would hold the dispatcher back for ever."""
    until = time.time() - LOST_AFTER_S
    old = [(p, run_id) for p in ("high", "low")
           for run_id, _ in store.due(backlog.dispatched_index(p), until=until, limit=MOST_PER_CALL)]
    if not old or waiting_messages(celery) != 0:
        return 0
    for priority, run_id in old:
        def tx_reclaim(tx: Tx, run_id: str = run_id, priority: str = priority) -> None:
            tx.index(backlog.dispatched_index(priority), run_id, None)  # _back puts it back if it still waits
            _back(tx, run_id)

        store.transact(tx_reclaim)
    log.warning("%d dispatched runs lost their messages (the broker's queue is empty); back in their backlogs",
                len(old))
    return len(old)


class Ticker:
    """A thread of the API process: repair, then dispatch, every ``EMOTIONQ_DISPATCH_TICK_S``."""

    def __init__(self, store: Store, celery: Celery, settings: Settings) -> None:
        self.store, self.celery, self.settings = store, celery, settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emotionq-dispatch", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.dispatch_tick_s):
            try:
                repair(self.store)
                reclaim_lost(self.store, self.celery)
                dispatch(self.store, self.celery, self.settings)
            except EmotionQError as exc:  # the store or broker is down: next tick
                log.warning("dispatch tick: %s", exc)
            except Exception:  # noqa: BLE001 - the tick must go on
                log.exception("dispatch tick failed")
