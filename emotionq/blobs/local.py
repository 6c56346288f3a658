"""Blobs in a local directory (``EMOTIONQ_BLOB_DIR``, or ``EMOTIONQ_BLOB_URL=file:///path``): one host,
or a filesystem every host mounts. An upload is received into ``<root>/tmp`` and moved into place."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from emotionq.blobs.base import BlobStore, BlobWriter, missing, name
from emotionq.errors import BlobStoreUnavailable
from emotionq.settings import Settings


class LocalWriter(BlobWriter):
    """Holds up to ``BUFFER_BYTES`` of an upload in memory and writes it to ``<root>/tmp`` in ``flush``,
    which the API calls in a thread: the event loop never waits on the disk. An upload that fits the
    buffer touches the disk only if it is filed: a repeat of known audio is probed in memory and
    dropped."""

    BUFFER_BYTES = 1 << 20

    def __init__(self, store: LocalBlobs, *, max_bytes: int) -> None:
        super().__init__(max_bytes=max_bytes)
        self._store = store
        self._pending = bytearray()
        self._file = None
        self._done = False  # committed or aborted
        self.path: Path | None = None

    def _append(self, chunk: bytes) -> None:
        self._pending += chunk

    @property
    def needs_flush(self) -> bool:
        return len(self._pending) >= self.BUFFER_BYTES

    @property
    def local(self) -> bool:
        return self._file is None  # still in memory: not even the disk is touched

    def flush(self) -> None:
        if self._file is None:
            fd, path = tempfile.mkstemp(dir=self._store.tmp_dir, prefix="upload-")
            self._file, self.path = os.fdopen(fd, "wb"), Path(path)
        self._file.write(self._pending)
        self._pending.clear()

    def _finish(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()

    def source(self) -> Path | io.BytesIO:
        return self.path if self.path is not None else io.BytesIO(self._pending)

    def commit(self, gen: str | None) -> bool:
        target = self._store.root / name(self.close(), gen)
        if self._done:
            return False
        self._done = True
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self._discard()
            return False
        if self.path is None:  # still in memory: written once, where it belongs
            self.flush()
            self._file.close()
        os.replace(self.path, target)
        return True

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._discard()

    def _discard(self) -> None:
        self._pending.clear()
        if self._file is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)


class LocalBlobs(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root.resolve()}"
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, url: str, settings: Settings, *, worker: bool = False) -> LocalBlobs:
        parts = urlsplit(url)
        return cls(Path(parts.path if parts.scheme == "file" else url))

    def writer(self, *, max_bytes: int) -> LocalWriter:
        return LocalWriter(self, max_bytes=max_bytes)

    @contextlib.contextmanager
    def local(self, sha256: str, gen: str | None) -> Iterator[Path]:
        path = self.root / name(sha256, gen)
        if not path.exists():
            raise missing(sha256, str(self.root))
        yield path

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def listing(self) -> Iterator[tuple[str, float]]:
        for path in self.root.glob("*/*"):
            with contextlib.suppress(FileNotFoundError):
                yield str(path.relative_to(self.root)), path.stat().st_mtime

    def ping(self) -> None:
        if not os.access(self.tmp_dir, os.W_OK):
            raise BlobStoreUnavailable(f"the blob directory {self.root} is not writable")

    def path(self, sha256: str, gen: str | None = None) -> Path:
        """Where a blob lies (for tests and tools)."""
        return self.root / name(sha256, gen)

