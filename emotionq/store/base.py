"""What every store backend provides: keyed JSON documents and atomic read-modify-write.

Besides documents, a store keeps *indexes*: named sets of members, each with a score (a time,
here), written inside transactions and read in score order (``due``). They are how the janitor
finds running leases, pending deliveries and blobs to collect without scanning every document.
Indexes are also *ordered sets* that transactions read (``first``): the backlogs of waiting runs,
in the order the dispatcher takes them (``emotionq.jobs.scheduler.backlog``); ``rank`` answers a member's place
without reading the set.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Callable, Protocol, TypeVar

T = TypeVar("T")


class Tx(Protocol):
    """One transaction: reads see a consistent state, writes apply all or nothing."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, doc: dict, *, ttl: int | None = None) -> None:
        """Write ``doc``; ``ttl`` seconds sets a new expiry, None keeps the key's current one."""

    def delete(self, key: str) -> None: ...

    def touch(self, key: str, ttl: int) -> None:
        """Give the key a new expiry of ``ttl`` seconds at commit, keeping its document (unlike ``put``,
        nothing is rewritten)."""

    def index(self, name: str, member: str, score: float | None) -> None:
        """Set ``member``'s score in index ``name`` at commit; None removes it. Written, never read, in a
        transaction: the index is a to-do list for the janitor, who checks each document it names."""

    def first(self, name: str, limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` (member, score) of index ``name``, lowest score first, as this transaction
        sees it (its own writes included); another writer changing the index makes it run again."""


class AsyncStore(Protocol):
    """The few reads and writes the API's hot paths make on its event loop, without a thread's round trip
    (``Store.aio``; only where the backend has a non-blocking client: Redis)."""

    async def get_many(self, keys: list[str]) -> list[dict | None]: ...

    async def get_linked(self, key: str, *, field: str, prefix: str) -> tuple[dict | None, dict | None]:
        """The document of ``key`` and that of ``prefix`` + its member ``field`` (a string), in one trip;
        (None, None) without the first, (doc, None) without the second."""

    async def put_if(self, puts: dict[str, tuple[dict, int]], *, alive: dict[str, int], absent: Collection[str] = (),
                     read: str) -> dict | None:
        """``Store.put_if``, in one trip with a read of ``read`` (a key of ``alive``): its document if the
        writes were made, None if not."""

    async def close(self) -> None: ...


class Store(ABC):
    """A document store with serialisable transactions.

    ``transact(fn)`` runs ``fn(tx)`` and commits its writes atomically; if another
    writer touched a key ``fn`` read, ``fn`` runs again, so it must have no side
    effects besides the ``tx`` calls.
    """

    url: str
    aio: AsyncStore | None = None  # the same store for the event loop, where the backend has it

    @abstractmethod
    def transact(self, fn: Callable[[Tx], T]) -> T: ...

    @abstractmethod
    def get(self, key: str) -> dict | None: ...

    @abstractmethod
    def get_raw(self, key: str) -> bytes | None:
        """The document of ``key`` as the JSON text the store holds, undecoded: for a reader that passes a
        large part of it on without decoding it (``emotionq.web.stream``)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable if the store does not answer."""

    @abstractmethod
    def due(self, index: str, *, until: float, limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` (member, score) of index ``index`` whose score is at most ``until``, lowest first."""

    @abstractmethod
    def rank(self, index: str, member: str) -> int | None:
        """How many members of ``index`` score lower than ``member`` (ties by member); None if absent."""

    def get_many(self, keys: list[str]) -> list[dict | None]:
        """The documents of ``keys``, in order (one round trip where the backend allows)."""
        return [self.get(key) for key in keys]

    def put_if(self, puts: dict[str, tuple[dict, int]], *, alive: dict[str, int], absent: Collection[str] = ()) -> bool:
        """Write ``puts`` (key: (document, ttl)) and give each key of ``alive`` a new expiry of its ttl, all
        at once, if every key of ``alive`` exists and no key of ``absent`` does; otherwise write nothing and
        return False. It reads no document and watches nothing, so it never runs again, however many
        write alongside: the write for what is settled once it exists (a finished run). (A transaction
        that read a key of ``alive`` still runs again, as after any write of it.)"""

        def tx_put(tx: Tx) -> bool:
            if any(tx.get(key) is None for key in alive) or any(tx.get(key) is not None for key in absent):
                return False
            for key, (doc, ttl) in puts.items():
                tx.put(key, doc, ttl=ttl)
            for key, ttl in alive.items():
                tx.touch(key, ttl)
            return True

        return self.transact(tx_put)

    def purge_expired(self) -> int:
        """Delete expired documents where the backend does not do it itself."""
        return 0

    def close(self) -> None:
        """Release connections."""
