"""A store that waits out an outage: what a worker needs, since it cannot do anything else meanwhile.

The API fails fast instead (503 with Retry-After) and does not use this.
Retrying a transaction whose commit reached the store but whose reply was lost
is safe: the job logic recognises its own earlier commit (see ``emotionq.jobs``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Callable, TypeVar

from emotionq.errors import StoreUnavailable
from emotionq.retrying import patiently
from emotionq.store.base import Store, Tx

T = TypeVar("T")


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

    def ping(self) -> None:
        self.inner.ping()

    def purge_expired(self) -> int:
        return self.inner.purge_expired()

    def close(self) -> None:
        self.inner.close()

    def _patiently(self, call: Callable[..., T], *args) -> T:
        return patiently(lambda: call(*args), patience_s=self.patience_s, retry_on=StoreUnavailable, what="store")
