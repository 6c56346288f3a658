"""The janitor's lease in the store: at most one janitor sweeps at a time, across hosts.

The holder renews it at each step; one that dies lets it lapse after ``ttl_s`` and another takes
over. The lease saves doing the work twice; it is not what keeps the work correct (every sweep step
is a store transaction that can run twice at once).
"""

from __future__ import annotations

import time

from emotionq.store import Store, Tx

KEY = "janitor:lease"


def acquire(store: Store, *, holder: str, ttl_s: float) -> bool:
    """Take or renew the lease for ``holder``; False while another holds it."""

    def tx_acquire(tx: Tx) -> bool:
        now = time.time()
        lease = tx.get(KEY)
        if lease is not None and lease["holder"] != holder and lease["until"] > now:
            return False
        since = lease["since"] if lease is not None and lease["holder"] == holder else now
        tx.put(KEY, {"holder": holder, "until": now + ttl_s, "since": since})
        return True

    return store.transact(tx_acquire)


def release(store: Store, *, holder: str) -> None:
    def tx_release(tx: Tx) -> None:
        lease = tx.get(KEY)
        if lease is not None and lease["holder"] == holder:
            tx.delete(KEY)

    store.transact(tx_release)


def holder(store: Store) -> str | None:
    lease = store.get(KEY)
    return lease["holder"] if lease is not None and lease["until"] > time.time() else None
