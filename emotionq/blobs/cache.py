"""A worker host's bounded local cache of blobs, least recently used evicted first, by bytes.

Every worker process of a host shares one directory (``EMOTIONQ_BLOB_CACHE_DIR``). A blob is
fetched into a temporary file, its SHA-256 checked, and moved into place; a reader holds a shared
``flock`` on the file while it decodes, and eviction skips files someone holds, so a blob is never
removed under a worker using it. Each process counts the bytes it added since it last looked at
the directory and evicts, oldest use first, down to 90% of ``EMOTIONQ_BLOB_CACHE_BYTES`` when its
count passes the limit: the directory stays about that size (a little more with many processes,
and a single blob larger than the limit is still fetched, and evicted after use).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOW_WATER = 0.9


class BlobCache:
    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self._estimate: int | None = None  # bytes in the directory, as this process last saw plus added
        self.hits = self.misses = 0

    def path(self, sha256: str) -> Path:
        return self.dir / sha256[:2] / sha256

    @contextlib.contextmanager
    def get(self, sha256: str, fetch: Callable[[Path], None]) -> Iterator[Path]:
        """The cached file of ``sha256``, held for the block; on a miss ``fetch(tmp)`` writes it (checked)."""
        path = self.path(sha256)
        for attempt in range(3):
            held = self._hold(path)
            if held is not None:
                self.hits += attempt == 0
                try:
                    yield path
                finally:
                    os.close(held)
                return
            self.misses += 1
            tmp = self.dir / "tmp" / f"{sha256}.{uuid.uuid4().hex[:8]}"
            try:
                fetch(tmp)
                path.parent.mkdir(exist_ok=True)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            self._added(path.stat().st_size)
        raise RuntimeError(f"blob {sha256} was evicted three times while being fetched; raise the cache size")

    def _hold(self, path: Path) -> int | None:
        """An open descriptor with a shared lock on ``path``, or None if it is not cached."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.fstat(fd).st_nlink == 0:  # evicted between open and lock
            os.close(fd)
            return None
        os.utime(path)  # the LRU clock: last use
        return fd

    def _added(self, size: int) -> None:
        if self._estimate is None:
            self._estimate = self._total()
        else:
            self._estimate += size
        if self._estimate > self.max_bytes:
            self._estimate = self.evict(target=int(self.max_bytes * LOW_WATER))

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for path in self.dir.glob("??/*"):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                found.append((st.st_mtime, st.st_size, path))
        return found

    def _total(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self, *, target: int) -> int:
        """Remove least recently used blobs that nobody holds until at most ``target`` bytes remain;
        returns the bytes left."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= target:
                break
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                total -= size
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a worker is decoding it
                path.unlink(missing_ok=True)
                total -= size
            finally:
                os.close(fd)
        for stale in (self.dir / "tmp").iterdir():  # fetches of processes that died
            with contextlib.suppress(FileNotFoundError):
                if stale.stat().st_mtime < time.time() - 3600:
                    stale.unlink()
        log.info("blob cache %s: %d bytes after eviction (limit %d)", self.dir, total, self.max_bytes)
        return total
