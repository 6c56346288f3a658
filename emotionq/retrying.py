"""Waiting before trying again: a worker's patience with a service that does not answer, and a server's
``Retry-After`` read as seconds (the client and webhook deliveries honour it).

Nothing here needs more than the standard library: the client imports it too.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from datetime import timezone
from typing import TypeVar

from emotionq.errors import EmotionQError

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PAUSE_S = 5.0


def patiently(call: Callable[[], T], *, patience_s: float, retry_on: type[EmotionQError], what: str,
              first_pause_s: float = 0.1) -> T:
    """``call()``, tried again after pauses that double (up to 5 s) while it raises ``retry_on``; the error
    is raised once the next pause would end past ``patience_s``. ``what`` names the service in the log."""
    deadline = time.monotonic() + patience_s
    pause = first_pause_s
    while True:
        try:
            return call()
        except retry_on as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s unavailable, retrying in %.1f s: %s", what, pause, exc.message)
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_S)


def retry_after_s(value: str | None, *, cap_s: float | None = None) -> float | None:
    """A ``Retry-After`` header as seconds from now (it is a number of seconds or an HTTP date), at most
    ``cap_s``; None if there is none or it cannot be read."""
    if not value:
        return None
    if value.strip().isascii() and value.strip().isdigit():  # isdigit() alone takes "²", which float() refuses
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": a date in UTC with no zone said
            when = when.replace(tzinfo=timezone.utc)
        seconds = max(0.0, when.timestamp() - time.time())
    return seconds if cap_s is None else min(seconds, cap_s)
