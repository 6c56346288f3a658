"""What every store backend provides: keyed JSON documents and atomic read-modify-write."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Protocol, TypeVar

T = TypeVar("T")


class Tx(Protocol):
    """One transaction: reads see a consistent state, writes apply all or nothing."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, doc: dict, *, ttl: int | None = None) -> None:
        """Write ``doc``; ``ttl`` seconds sets a new expiry, None keeps the key's current one."""

    def delete(self, key: str) -> None: ...


class Store(ABC):
    """A document store with serialisable transactions.

    ``transact(fn)`` runs ``fn(tx)`` and commits its writes atomically; if another
    writer touched a key ``fn`` read, ``fn`` runs again, so it must have no side
    effects besides the ``tx`` calls.
    """

    url: str

    @abstractmethod
    def transact(self, fn: Callable[[Tx], T]) -> T: ...

    @abstractmethod
    def get(self, key: str) -> dict | None: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable if the store does not answer."""

    def purge_expired(self) -> int:
        """Delete expired documents where the backend does not do it itself."""
        return 0

    def close(self) -> None:
        """Release connections."""
