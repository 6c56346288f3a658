"""Signing secrets per API client. Rotation keeps the old secret signing for a grace period,
so receivers can switch over without dropping a delivery."""

from __future__ import annotations

import base64
import secrets as _random
import time

from standardwebhooks import Webhook

from emotionq.store import Store, Tx

PREFIX = "whsec_"
SECRET_BYTES = 32


def _key(client: str) -> str:
    return f"secrets:{client}"


def _new() -> dict:
    raw = base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode()
    return {"secret": PREFIX + raw, "created_at": time.time(), "expires_at": None}


def _active(doc: dict | None, now: float) -> list[dict]:
    return [s for s in (doc or {}).get("secrets", []) if s["expires_at"] is None or s["expires_at"] > now]


def active(store: Store, *, client: str) -> list[dict]:
    """The client's secrets that sign now, newest first; the first use creates one."""

    def tx_active(tx: Tx) -> list[dict]:
        now = time.time()
        current = _active(tx.get(_key(client)), now)
        if not current:
            current = [_new()]
            tx.put(_key(client), {"secrets": current})
        return current

    return store.transact(tx_active)


def rotate(store: Store, *, client: str, grace_seconds: float) -> list[dict]:
    """Make a new primary secret; the others keep signing for ``grace_seconds`` more at most."""

    def tx_rotate(tx: Tx) -> list[dict]:
        now = time.time()
        old = _active(tx.get(_key(client)), now)
        for s in old:
            end = now + grace_seconds
            s["expires_at"] = min(s["expires_at"] or end, end)
        current = [_new(), *_active({"secrets": old}, now)]
        tx.put(_key(client), {"secrets": current})
        return current

    return store.transact(tx_rotate)


def signature_header(secrets: list[dict], *, msg_id: str, timestamp, body: str) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per active secret, space-separated."""
    return " ".join(Webhook(s["secret"]).sign(msg_id, timestamp, body) for s in secrets)
