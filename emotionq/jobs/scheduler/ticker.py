"""Every API process's scheduler thread: the repairs, then a dispatch, every ``EMOTIONQ_DISPATCH_TICK_S``."""

from __future__ import annotations

import logging
import threading

from celery import Celery

from emotionq.errors import EmotionQError
from emotionq.jobs.scheduler import dispatch, repair
from emotionq.settings import Settings
from emotionq.store import Store

log = logging.getLogger(__name__)


class Ticker:
    """A thread of the API process: each repair step, then dispatch, every ``EMOTIONQ_DISPATCH_TICK_S``."""

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
                repair.unconfirmed(self.store)
                repair.unfiled(self.store)
                repair.lost_messages(self.store, self.celery)
                dispatch.dispatch(self.store, self.celery, self.settings)
            except EmotionQError as exc:  # the store or broker is down: next tick
                log.warning("dispatch tick: %s", exc)
            except Exception:  # noqa: BLE001 - the tick must go on
                log.exception("dispatch tick failed")
