"""Which audio the jobs still need, and collecting the rest without ever deleting audio in use.

The store keeps one document per blob (``blob:<sha256>``): its *generation*, the runs that use it,
and until when it is held (``EMOTIONQ_BLOB_RETENTION_S`` after the last job that needed it). The
object is named by both (``<sha>.<gen>``). The protocol:

- A submission that needs the audio (a new run, or a job joining a live one) calls ``hold`` in its
  own transaction: it extends the hold, adds a new run, and gets the generation to file the audio
  under (a PUT that is a no-op when the object exists: identical audio is stored once).
- The janitor ``condemn``s a blob in one transaction that sees no hold and no live run, marking it
  ``deleting``; it then deletes that generation's object, and ``bury`` drops the document.
- A submission that finds the blob ``deleting`` (or gone) starts a **new generation**: its audio goes
  to a new name, which the janitor's delete, however late it lands, can never touch.

So the race between a collection that found no reference and an upload of the same audio that
found the blob present is decided by the store: either the upload's transaction comes first (the
janitor's sees the hold and keeps the blob) or the janitor's does (the upload writes a new
generation). Nothing is deleted that a run counts on, with no clocks or timeouts involved; a
janitor that dies between ``condemn`` and ``bury`` is finished by the next one.
"""

from __future__ import annotations

import uuid

from emotionq.jobs.domain import TERMINAL
from emotionq.jobs.records import get_run
from emotionq.store import Store, Tx

INDEX = "blobs"  # score: when the blob's hold ends (or when to look again)
LIVE, DELETING = "live", "deleting"
RECHECK_S = 300.0  # a blob whose hold ended but whose run is still live is looked at again this much later


def key(sha256: str) -> str:
    return f"blob:{sha256}"


def hold(tx: Tx, *, sha256: str, run_id: str | None, now: float, retention_s: float) -> str:
    """Inside a submission's transaction: hold the blob for ``retention_s`` more (and for ``run_id``, a
    new run, while it lives); returns the generation its audio is filed under."""
    doc = tx.get(key(sha256))
    if doc is None or doc["state"] == DELETING:  # gone, or being deleted: a fresh name
        doc = {"gen": uuid.uuid4().hex[:12], "state": LIVE, "runs": [], "held_until": 0.0}
    if run_id is not None:
        doc["runs"] = [r for r in doc["runs"] if _live(tx, r)] + [run_id]
    doc["held_until"] = max(doc["held_until"], now + retention_s)
    tx.put(key(sha256), doc)
    tx.index(INDEX, sha256, doc["held_until"])
    return doc["gen"]


def _live(tx: Tx, run_id: str) -> bool:
    run = get_run(tx, run_id)
    return run is not None and run.state not in TERMINAL


def condemn(store: Store, *, sha256: str, now: float) -> str | None:
    """Mark the blob ``deleting`` if nothing holds it; returns the generation to delete, or None to keep it.
    A blob already ``deleting`` (a janitor died midway) is returned again, to finish."""

    def tx_condemn(tx: Tx) -> str | None:
        doc = tx.get(key(sha256))
        if doc is None:
            tx.index(INDEX, sha256, None)
            return None
        if doc["state"] == DELETING:
            return doc["gen"]
        if doc["held_until"] > now:
            tx.index(INDEX, sha256, doc["held_until"])
            return None
        live = [r for r in doc["runs"] if _live(tx, r)]
        if live:
            doc["runs"] = live
            tx.put(key(sha256), doc)
            tx.index(INDEX, sha256, now + RECHECK_S)
            return None
        doc.update(state=DELETING, runs=[], condemned_at=now)
        tx.put(key(sha256), doc)
        return doc["gen"]

    return store.transact(tx_condemn)


def bury(store: Store, *, sha256: str, gen: str) -> None:
    """After the object of ``gen`` was deleted: drop the document, unless an upload revived the blob."""

    def tx_bury(tx: Tx) -> None:
        doc = tx.get(key(sha256))
        if doc is not None and doc["state"] == DELETING and doc["gen"] == gen:
            tx.delete(key(sha256))
            tx.index(INDEX, sha256, None)

    store.transact(tx_bury)


def is_orphan(store: Store, *, sha256: str, gen: str) -> bool:
    """Whether an object of this generation is one no run can ever use: its blob is gone, or lives on
    under another generation (an upload that lost the race above wrote it late)."""
    doc = store.get(key(sha256))
    return doc is None or doc["gen"] != gen
