"""Content-addressed audio files: ``<root>/<sha[:2]>/<sha>``, written once, hashed while written.

An upload is received into a temporary file and filed under its SHA-256 only once its job
has been accepted (``BlobWriter.commit``); a refused request leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from emotionq.errors import PayloadTooLarge


class BlobWriter:
    """Receives an upload chunk by chunk into a temporary file; ``commit`` files it under its SHA-256."""

    def __init__(self, store: BlobStore, *, max_bytes: int) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0
        self.sha256: str | None = None
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb")
        self.path = Path(name)  # the bytes received, readable once ``close`` has been called

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise PayloadTooLarge(
                f"the upload exceeds the {self._max_bytes:,}-byte limit; send a shorter or compressed file"
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def close(self) -> str:
        """Finish receiving; returns the SHA-256 (hex) of what was received."""
        self._file.close()
        self.sha256 = self._hash.hexdigest()
        return self.sha256

    def commit(self) -> bool:
        """Move the file to its content address; True if this upload created the blob there."""
        sha = self.sha256 or self.close()
        target = self._store.path(sha)
        if not self.path.exists():  # committed already
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self.path.unlink()
            return False
        os.replace(self.path, target)
        return True

    def abort(self) -> None:
        """Throw away what was received (nothing, once committed)."""
        self._file.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def writer(self, *, max_bytes: int) -> BlobWriter:
        return BlobWriter(self, max_bytes=max_bytes)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256
