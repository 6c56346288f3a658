"""Which workers have a model loaded and answering: written by workers, read by ``/readyz``."""

from __future__ import annotations

import time

from emotionq.store import Store, Tx

KEY = "workers"
STALE_AFTER_S = 90.0
HEARTBEAT_S = 30.0


def announce(store: Store, *, name: str, info: dict) -> None:
    """Record that worker ``name`` is ready (called after its model answered, then on a heartbeat)."""

    def tx_announce(tx: Tx) -> None:
        now = time.time()
        workers = {n: w for n, w in (tx.get(KEY) or {}).items() if now - w["seen_at"] < STALE_AFTER_S}
        workers[name] = {**info, "seen_at": now}
        tx.put(KEY, workers, ttl=int(STALE_AFTER_S * 2))

    store.transact(tx_announce)


def withdraw(store: Store, *, name: str) -> None:
    def tx_withdraw(tx: Tx) -> None:
        workers = tx.get(KEY) or {}
        if workers.pop(name, None) is not None:
            tx.put(KEY, workers)

    store.transact(tx_withdraw)


def live(store: Store) -> dict[str, dict]:
    now = time.time()
    return {n: w for n, w in (store.get(KEY) or {}).items() if now - w["seen_at"] < STALE_AFTER_S}
