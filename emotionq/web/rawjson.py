"""Cutting one member out of a JSON document without decoding it, with msgspec.

A job's output can be tens of megabytes of JSON (``granularity=frame`` on a long recording), and decoding
or encoding it with ``json`` holds the interpreter lock for seconds, stalling every request of the API
process. The event streams (``emotionq.web.stream``) pass the output on as the store holds it: msgspec
reads the document's top-level members as ``msgspec.Raw`` (their JSON text, validated but not decoded:
about 40 ms for 45 MB), and the event's body is written around it (``around``), never copied.
"""

from __future__ import annotations

import msgspec

NULL = msgspec.Raw(b"null")
_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ENCODER = msgspec.json.Encoder()


def cut(raw: bytes, name: str) -> tuple[bytes, memoryview | None]:
    """``raw`` (a JSON object) with the value of its top-level member ``name`` replaced by ``null``, and
    that value's JSON text; or ``raw`` and None when that value is not an object or array (or absent)."""
    members = _MEMBERS.decode(raw)
    value = members.get(name)
    if value is None or memoryview(value)[:1] not in (b"{", b"["):
        return raw, None
    members[name] = NULL
    return _ENCODER.encode(members), memoryview(value)


_MARK = msgspec.Raw(b'"\x00"')  # a string no encoded member holds: JSON writes U+0000 as \u0000


def around(document: dict, name: str) -> tuple[bytes, bytes]:
    """``document`` as JSON, in the two parts around the value of its member ``name``: written between
    them, a value's JSON text makes the document with that value, with no copy of the value."""
    encoded = _ENCODER.encode({**document, name: _MARK})
    at = encoded.index(_MARK)
    return encoded[:at], encoded[at + len(_MARK):]
