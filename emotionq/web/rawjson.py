"""Cutting one member out of a JSON document without decoding it.

A job's output can be tens of megabytes of JSON (``granularity=frame`` on a long recording), and decoding
or encoding it holds the interpreter lock for seconds, stalling every request of the API process. The
event streams (``emotionq.web.stream``) pass the output on as the store holds it: this finds where it
is with a regular expression that steps from one string or bracket to the next (the numbers between
are skipped inside the regex engine), so the lock is released between steps, and the rest of the
document, small, is decoded as usual.
"""

from __future__ import annotations

import json
import re

# An array of numbers and literals only (a frame's features: balanced, so one step), a string (with its
# escapes), a bracket or a colon; everything else (numbers, commas, literals, spaces) lies between matches.
TOKEN = re.compile(rb'\[[^\[\]{}"]*\]|"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:]')
OPENS, CLOSES = (b"{", b"["), (b"}", b"]")
SPACE = b" \t\r\n"


def cut(raw: bytes, name: str) -> tuple[bytes, memoryview | None]:
    """``raw`` (a JSON object) with the value of its top-level member ``name`` replaced by ``null``, and
    that value's JSON text (a view of ``raw``, not a copy); or ``raw`` and None when that value is not an
    object or array (or absent)."""
    key = json.dumps(name).encode()
    tokens = TOKEN.finditer(raw)
    depth, last = 0, b""
    for match in tokens:
        token = match.group()
        if token in OPENS:
            depth += 1
        elif token in CLOSES:
            depth -= 1
        elif token == b":":
            if depth == 1 and last == key:
                start = _skip_space(raw, match.end())
                if raw[start:start + 1] not in OPENS:
                    return raw, None
                end = _close(tokens, start)
                return raw[:start] + b"null" + raw[end:], memoryview(raw)[start:end]
        elif depth == 1:
            last = token
    return raw, None


def _skip_space(raw: bytes, at: int) -> int:
    while at < len(raw) and raw[at:at + 1] in SPACE:
        at += 1
    return at


def _close(tokens, start: int) -> int:
    """The end of the object or array opening at ``start``: the next token of ``tokens`` is its opening
    bracket, or the whole of it when it is an array of numbers."""
    depth = 0
    for match in tokens:
        token = match.group()
        if token in OPENS:
            depth += 1
        elif token in CLOSES:
            depth -= 1
        if depth == 0:
            return match.end()
    raise ValueError(f"the JSON value at byte {start} does not end")
