"""Which workers have a model loaded and answering: announced by workers on a heartbeat, read by ``/readyz``
and by the scheduler (how many runs the broker may hold, and ETAs). Here, below both, so neither imports
the other."""

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


def retire(store: Store, *, name: str) -> None:
    """Remove worker ``name`` (it is shutting down)."""

    def tx_retire(tx: Tx) -> None:
        workers = tx.get(KEY) or {}
        if workers.pop(name, None) is not None:
            tx.put(KEY, workers)

    store.transact(tx_retire)


def live(store: Store) -> dict[str, dict]:
    """The workers whose heartbeat is recent, by name."""
    now = time.time()
    return {n: w for n, w in (store.get(KEY) or {}).items() if now - w["seen_at"] < STALE_AFTER_S}


def served(store: Store) -> dict[str, list[dict]]:
    """The model families live workers serve: family -> what each worker serving it loaded (id, revision,
    runtime, ...), from their announcements (a worker that lists no ``models`` serves emotion2vec alone)."""
    out: dict[str, list[dict]] = {}
    for name, worker in sorted(live(store).items()):
        models = worker.get("models") or [{"name": "emotion2vec", "id": worker.get("model"),
                                            "runtime": worker.get("runtime"), "device": worker.get("device")}]
        for model in models:
            out.setdefault(model["name"], []).append({**model, "worker": name})
    return out
