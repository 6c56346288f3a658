"""Cutting one member out of a JSON document without decoding it, with msgspec.

A job's output can be tens of megabytes of JSON (``granularity=frame`` on a long recording), and decoding
or encoding it with ``json`` holds the interpreter lock for seconds, stalling every request of the API
process. The event streams (``emotionq.web.stream``) pass the output on as the store holds it: msgspec
reads the document's top-level members as ``msgspec.Raw`` (their JSON text, validated but not decoded:
about 40 ms for 45 MB), and writes a Raw back into another document verbatim (``splice``).
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


def splice(document: dict, name: str, value: memoryview) -> bytes:
    """``document`` as JSON, with ``value`` (JSON text) written verbatim as its member ``name``."""
    return _ENCODER.encode({**document, name: msgspec.Raw(value)})
