"""Content-addressed audio files: ``<root>/<sha[:2]>/<sha>``, written once, hashed while written."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from emotionq.errors import PayloadTooLarge


class BlobWriter:
    """Receives an upload chunk by chunk; ``commit`` files it under its SHA-256."""

    def __init__(self, store: BlobStore, *, max_bytes: int) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(name)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise PayloadTooLarge(
                f"the upload exceeds the {self._max_bytes:,}-byte limit; send a shorter or compressed file"
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def commit(self) -> str:
        """Move the file to its content address and return its SHA-256 (hex)."""
        self._file.close()
        sha = self._hash.hexdigest()
        target = self._store.path(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self._tmp.unlink()
        else:
            os.replace(self._tmp, target)
        return sha

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def writer(self, *, max_bytes: int) -> BlobWriter:
        return BlobWriter(self, max_bytes=max_bytes)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256
