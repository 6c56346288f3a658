"""The janitor: what nobody else would notice. One process (``emotionq janitor``; ``emotionq run``
starts one) sweeps every ``EMOTIONQ_JANITOR_INTERVAL_S``:

- ``leases``: runs whose worker vanished (lease expired) are failed ``worker_lost``, webhooks sent;
- ``deliveries``: webhook deliveries left pending (their message was lost: the broker was down) are
  queued again;
- ``blobs``: audio no live run needs and whose retention has passed is deleted (``jobs.blobrefs``
  says why that never deletes audio in use), and, now and then, objects nothing refers to at all.

Run one on every host you like: a lease in the store (``lock``) keeps exactly one of them active, and
another takes over within a few intervals of it dying. Every step is safe to repeat or to run twice
at once, so a janitor killed mid-sweep loses nothing and deletes nothing still needed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

from emotionq.janitor import lock, sweeps
from emotionq.settings import Settings

log = logging.getLogger(__name__)


def run(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Sweep until SIGTERM/SIGINT (or ``stop``), whenever this process holds the janitor's lease."""
    from emotionq import queues
    from emotionq.blobs import open_blobs
    from emotionq.store import open_store
    from emotionq.webhooks.events import Notifier

    stop = stop or _stop_on_signals()
    store = open_store(settings.effective_store_url)
    janitor = sweeps.Janitor(settings=settings, store=store, blobs=open_blobs(settings),
                             notifier=Notifier(store=store, celery=queues.make_celery(settings), settings=settings))
    me = f"{socket.gethostname()}:{os.getpid()}"
    ttl = 3 * settings.janitor_interval_s
    active = False
    log.info("janitor %s: every %.0f s; blobs in %s", me, settings.janitor_interval_s, janitor.blobs.url)
    while not stop.is_set():
        try:
            holding = lock.acquire(store, holder=me, ttl_s=ttl)
            if holding != active:
                log.info("janitor %s: %s", me, "active" if holding else "standing by (another janitor is active)")
                active = holding
            if holding:
                janitor.sweep(keep_going=lambda: not stop.is_set() and lock.acquire(store, holder=me, ttl_s=ttl))
        except Exception:  # a store or broker outage: try again next time
            log.exception("janitor %s: sweep failed; trying again in %.0f s", me, settings.janitor_interval_s)
        stop.wait(settings.janitor_interval_s)
    if active:
        lock.release(store, holder=me)
    store.close()


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


__all__ = ["run"]
