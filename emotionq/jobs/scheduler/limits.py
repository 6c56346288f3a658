"""Per-client limits, in the store so that they hold across API processes and hosts: a request rate
(a token bucket) and a cap on waiting jobs. Defaults come from the settings; ``emotionq keys limits``
sets them per client. Over a limit: ``RateLimited`` (429 with Retry-After and the IETF draft's
``RateLimit-Policy``/``RateLimit`` headers); within it, nothing changes.

Costs: one read per API request (the client's limits; on Redis in the same trip as its API key:
``emotionq.web.keys.authenticate_async``), one small transaction more where a rate is set (the bucket),
and one document more in a submission's transaction (the client's count of waiting runs, kept where
runs enter and leave ``queued``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from emotionq.errors import RateLimited
from emotionq.settings import Settings
from emotionq.store import Store, Tx


@dataclass(frozen=True)
class Limits:
    rate_per_s: float  # tokens added per second; 0: no rate limit
    burst: int  # the bucket's size
    max_waiting: int  # runs the client may have waiting; 0: no cap beyond the service's


LIMITS_PREFIX = "limits:"


def limits_key(client: str) -> str:
    return LIMITS_PREFIX + client


def bucket_key(client: str) -> str:
    return f"bucket:{client}"


def waiting_key(client: str) -> str:
    return f"waiting:{client}"


def limits_of(tx: Tx | Store, client: str, settings: Settings) -> Limits:
    return from_doc(tx.get(limits_key(client)), settings)


def from_doc(own: dict | None, settings: Settings) -> Limits:
    """A client's limits: its own document (``limits:<client>``, or None), the settings' defaults for the rest."""
    own = own or {}
    return Limits(rate_per_s=own.get("rate_per_s", settings.client_rate_per_s),
                  burst=own.get("burst", settings.client_burst),
                  max_waiting=own.get("max_waiting", settings.client_max_waiting))


def set_limits(store: Store, client: str, **values: float | int | None) -> dict:
    """Set some of ``rate_per_s``, ``burst``, ``max_waiting`` for ``client`` (None: back to the default)."""

    def tx_set(tx: Tx) -> dict:
        own = tx.get(limits_key(client)) or {}
        for name, value in values.items():
            if value is None:
                own.pop(name, None)
            else:
                own[name] = value
        tx.put(limits_key(client), own)
        return own

    return store.transact(tx_set)


def take_token(store: Store, client: str, settings: Settings) -> None:
    """Spend one request of ``client``'s rate; RateLimited if its bucket is empty. A client without a
    rate costs one read."""
    if limits_of(store, client, settings).rate_per_s > 0:
        spend_token(store, client, settings)


def spend_token(store: Store, client: str, settings: Settings) -> None:
    """Take one token from the bucket of ``client``, whose limits set a rate; RateLimited if it is empty."""

    def tx_take(tx: Tx) -> float | None:
        limits = limits_of(tx, client, settings)
        if limits.rate_per_s <= 0:
            return None
        now = time.time()
        bucket = tx.get(bucket_key(client)) or {"tokens": float(limits.burst), "at": now}
        tokens = min(float(limits.burst), bucket["tokens"] + (now - bucket["at"]) * limits.rate_per_s)
        if tokens < 1:
            return (1 - tokens) / limits.rate_per_s
        ttl = math.ceil(limits.burst / limits.rate_per_s) + 1  # a full bucket needs no document
        tx.put(bucket_key(client), {"tokens": tokens - 1, "at": now}, ttl=ttl)
        return None

    wait = store.transact(tx_take)
    if wait is not None:
        limits = limits_of(store, client, settings)
        window = max(1, math.ceil(limits.burst / limits.rate_per_s))
        raise RateLimited(f"client {client!r} is over its rate of {limits.rate_per_s:g} requests/s (bursts of "
                          f"{limits.burst}); retry after Retry-After seconds", retry_after_s=wait,
                          policy=f'"requests";q={limits.burst};w={window}',
                          state=f'"requests";r=0;t={math.ceil(wait)}')


def count_waiting(tx: Tx, client: str | None, delta: int) -> int:
    """Move ``client``'s count of waiting runs by ``delta``; returns the count before."""
    if not client:
        return 0
    doc = tx.get(waiting_key(client)) or {"n": 0}
    before = doc["n"]
    tx.put(waiting_key(client), {"n": max(0, before + delta)})
    return before


def check_waiting(tx: Tx, client: str, settings: Settings) -> None:
    """RateLimited (``too_many_waiting``) if ``client`` already has its most runs waiting."""
    cap = limits_of(tx, client, settings).max_waiting
    waiting = (tx.get(waiting_key(client)) or {"n": 0})["n"]
    if cap and waiting >= cap:
        raise RateLimited(f"client {client!r} has {waiting} jobs waiting, its most; retry when some have started",
                          code="too_many_waiting", retry_after_s=settings.client_waiting_retry_s,
                          policy=f'"waiting";q={cap}', state=f'"waiting";r=0;t={settings.client_waiting_retry_s}')
