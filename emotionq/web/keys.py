"""API keys: who is calling. Keys are shown once at creation and stored only as SHA-256 digests.

A key belongs to a *client*; jobs and webhook secrets belong to the client, so a
client's keys can be rotated without losing its jobs, and another client's key
gets 404 for them. ``EMOTIONQ_AUTH=disabled`` makes every caller the one client
``anonymous``: for local use only.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from emotionq.errors import InvalidRequest, NotFound, Unauthorized
from emotionq.store import Store, Tx
from emotionq.store.base import AsyncStore

ANONYMOUS = "anonymous"
KEY_PREFIX = "eq_"
INDEX_KEY = "apikeys"
CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _lookup_key(digest: str) -> str:
    return f"apikey:{digest}"


def create(store: Store, *, client: str) -> tuple[str, dict]:
    """A new key for ``client``; returns (the key, its record). The key itself is not stored."""
    if not CLIENT_NAME.match(client):
        raise InvalidRequest(f"client names are 1-64 of a-z 0-9 . _ - starting with a letter or digit, not {client!r}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = _digest(key)
    record = {"id": digest[:12], "client": client, "created_at": time.time()}

    def tx_create(tx: Tx) -> None:
        index = tx.get(INDEX_KEY) or {}
        index[record["id"]] = {**record, "digest": digest}
        tx.put(INDEX_KEY, index)
        tx.put(_lookup_key(digest), record)

    store.transact(tx_create)
    return key, record


def revoke(store: Store, *, key_id: str) -> dict:
    """Revoke a key by its id (from ``list_keys``); its client's other keys keep working."""

    def tx_revoke(tx: Tx) -> dict:
        index = tx.get(INDEX_KEY) or {}
        entry = index.pop(key_id, None)
        if entry is None:
            raise NotFound(f"no API key with id {key_id!r}")
        tx.put(INDEX_KEY, index)
        tx.delete(_lookup_key(entry.pop("digest")))
        return entry

    return store.transact(tx_revoke)


def list_keys(store: Store) -> list[dict]:
    """Every key's id, client and creation time (never the key or its digest)."""
    index = store.get(INDEX_KEY) or {}
    return sorted(({k: v for k, v in e.items() if k != "digest"} for e in index.values()),
                  key=lambda e: (e["client"], e["created_at"]))


def authenticate(store: Store, key: str | None) -> str:
    """The client a key belongs to; raises Unauthorized for a missing, unknown or revoked key."""
    _check_sent(key)
    return _client_of(store.get(_lookup_key(_digest(key))) if key.startswith(KEY_PREFIX) else None)


async def authenticate_async(aio: AsyncStore, key: str | None, *, linked: str) -> tuple[str, dict | None]:
    """``authenticate`` on the event loop, with the document ``linked`` + the client read in the same trip
    (the client's limits: ``emotionq.jobs.scheduler.limits.LIMITS_PREFIX``); (client, that document)."""
    _check_sent(key)
    if not key.startswith(KEY_PREFIX):
        _client_of(None)
    record, doc = await aio.get_linked(_lookup_key(_digest(key)), field="client", prefix=linked)
    return _client_of(record), doc


def _check_sent(key: str | None) -> None:
    if not key:
        raise Unauthorized("send your API key as 'Authorization: Bearer eq_...'; "
                           "an operator creates one with `emotionq keys create CLIENT`")


def _client_of(record: dict | None) -> str:
    if record is None:
        raise Unauthorized("this API key is unknown or has been revoked")
    return record["client"]
