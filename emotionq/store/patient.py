"""A store that waits out an outage: what a worker needs, since it cannot do anything else meanwhile.

The API fails fast instead (503 with Retry-After) and does not use this.
Retrying a transaction whose commit reached the store but whose reply was lost
is safe: the job logic recognises its own earlier commit (see ``emotionq.jobs``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Callable, TypeVar

from emotionq.errors import StoreUnavailable
from emotionq.store.base import Store, Tx

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0


class PatientStore(Store):
    def __init__(self, inner: Store, *, patience_s: float) -> None:
        self.inner, self.patience_s, self.url = inner, patience_s, inner.url

    def transact(self, fn: Callable[[Tx], T]) -> T:
        return self._patiently(self.inner.transact, fn)

    def get(self, key: str) -> dict | None:
        return self._patiently(self.inner.get, key)

    def get_raw(self, key: str) -> bytes | None:
        return self._patiently(self.inner.get_raw, key)

    def get_many(self, keys: list[str]) -> list[dict | None]:
        return self._patiently(self.inner.get_many, keys)

    def put_if(self, puts: dict[str, tuple[dict, int]], *, alive: dict[str, int], absent: Collection[str] = ()) -> bool:
        return self._patiently(lambda: self.inner.put_if(puts, alive=alive, absent=absent))

    def due(self, index: str, *, until: float, limit: int) -> list[tuple[str, float]]:
        return self._patiently(lambda: self.inner.due(index, until=until, limit=limit))

    def rank(self, index: str, member: str) -> int | None:
        return self._patiently(self.inner.rank, index, member)

    def size(self, index: str) -> int:
        return self._patiently(self.inner.size, index)

    def after(self, index: str, score: float, *, limit: int) -> list[tuple[str, float]]:
        return self._patiently(lambda: self.inner.after(index, score, limit=limit))

    def ping(self) -> None:
        self.inner.ping()

    def purge_expired(self) -> int:
        return self.inner.purge_expired()

    def close(self) -> None:
        self.inner.close()

    def _patiently(self, call: Callable[..., T], *args) -> T:
        deadline = time.monotonic() + self.patience_s
        delay = FIRST_DELAY_S
        while True:
            try:
                return call(*args)
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("store unavailable, retrying in %.1f s: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
