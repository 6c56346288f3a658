"""What every blob store provides: a writer that hashes what it receives, files it under a name, and
a local file of a blob for a worker to decode.

A writer receives an upload chunk by chunk (``write``); where a backend sends parts on while they
arrive, ``needs_flush`` says a part is ready and ``flush`` (blocking: call it off the event loop)
sends it. ``close`` returns the SHA-256; ``source`` is what the API probes; ``commit(gen)`` files
the audio once its job was accepted, and ``abort`` throws away whatever is left (nothing, once
committed), so a refused upload leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from emotionq.errors import BadInput, PayloadTooLarge

_NAME = re.compile(r"^(?:[0-9a-f]{2}/)?([0-9a-f]{64})(?:\.([0-9a-z]+))?$")


def name(sha256: str, gen: str | None) -> str:
    """The object name of a blob: ``<sha[:2]>/<sha>.<gen>`` (without ``.<gen>`` for audio filed before
    generations existed)."""
    return f"{sha256[:2]}/{sha256}" + (f".{gen}" if gen else "")


def parse_name(text: str) -> tuple[str, str | None] | None:
    """(sha256, generation) of an object name; None for anything else (temporary objects)."""
    match = _NAME.match(text)
    return (match.group(1), match.group(2)) if match else None


def missing(sha256: str, where: str) -> BadInput:
    return BadInput(f"the audio blob {sha256} is gone from {where}; upload it again", code="audio_missing")


class BlobWriter(ABC):
    """Receives one upload: hashes it, holds at most the byte limit, and files it on ``commit``."""

    def __init__(self, *, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0
        self.sha256: str | None = None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise PayloadTooLarge(
                f"the upload exceeds the {self._max_bytes:,}-byte limit; send a shorter or compressed file"
            )
        self._hash.update(chunk)
        self._append(chunk)

    @property
    def needs_flush(self) -> bool:
        """Whether a part waits to be sent on (``flush``)."""
        return False

    @property
    def local(self) -> bool:
        """Whether nothing of the upload has left this host yet: ``close`` and ``abort`` then send nothing,
        and may run on the event loop."""
        return False

    def flush(self) -> None:
        """Send the waiting part on (blocking)."""

    def close(self) -> str:
        """Finish receiving (blocking: the last part may be sent); returns the SHA-256 (hex)."""
        if self.sha256 is None:
            self._finish()
            self.sha256 = self._hash.hexdigest()
        return self.sha256

    @abstractmethod
    def _append(self, chunk: bytes) -> None: ...

    @abstractmethod
    def _finish(self) -> None: ...

    @abstractmethod
    def source(self) -> str | Path | BinaryIO:
        """What was received, readable (and seekable) for probing, once ``close`` has been called."""

    @abstractmethod
    def commit(self, gen: str | None) -> bool:
        """File the audio under its hash and generation ``gen`` unless that exists; True if this upload
        created it."""

    @abstractmethod
    def abort(self) -> None:
        """Throw away what was received (nothing, once committed)."""


class BlobStore(ABC):
    url: str

    @abstractmethod
    def writer(self, *, max_bytes: int) -> BlobWriter: ...

    @abstractmethod
    def local(self, sha256: str, gen: str | None) -> contextlib.AbstractContextManager[Path]:
        """A local file holding the blob, for the block (BadInput ``audio_missing`` if it is gone;
        BlobStoreUnavailable if the store does not answer)."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def delete(self, name: str) -> None:
        """Delete the object ``name`` (nothing if it is gone already)."""

    @abstractmethod
    def listing(self) -> Iterator[tuple[str, float]]:
        """(name, modified at) of every object, temporary ones (not matching ``parse_name``) included."""

    @abstractmethod
    def ping(self) -> None:
        """Raise BlobStoreUnavailable unless the store answers."""
