"""Freed heap memory back to the system after each forward pass, so that a worker's peak stays that of one pass.

A forward pass allocates and frees hundreds of MB of activations (the 30 s window of the large model:
~0.7 GB). glibc keeps what was freed in its heap, where the next pass's allocations of other sizes
fragment it: on torch the peak RSS of a 10-minute recording's 30 s windows climbed from 2.01 GB after
the first to 2.30 GB after the eighth and 2.37 GB after the twentieth; trimmed after each pass, 1.98 to
2.11 GB after the eighth, flat from the third. Pinning glibc's mmap threshold (1 MiB) held it flat too,
but tripled torch's page faults (+0.25 s of system time per 5 s clip). A trim walks the free chunks
(2-7 ms on a loaded machine), so passes shorter than ``TRIM_AFTER_S`` of padded audio, which free
little, are not followed by one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

TRIM_AFTER_S = 10.0  # seconds of padded audio in a forward pass from which it is followed by a trim


def trim() -> None:
    """``malloc_trim(0)``: return every free page of glibc's heaps to the system; nothing elsewhere."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    return libc
