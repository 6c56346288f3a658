"""The job store's documents for jobs and runs: keys, ids, the dedup key, the waiting counts.

Also the transaction steps that several operations share (failing a run, forgetting its dedup entry).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

from emotionq.jobs.scheduler import backlog, limits
from emotionq.store import Store, Tx

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})
DEPTH_KEY = "depth"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def dedup_key(*, sha256: str, model: str, options: dict) -> str:
    """The identity of a question: same audio bytes, same model, same options."""
    canon = json.dumps({"audio": sha256, "model": model, "options": options}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def run_key(run_id: str) -> str:
    return f"run:{run_id}"


def dedup_pointer(key: str) -> str:
    return f"dedup:{key}"


def queue_depth(store: Store) -> dict[str, int]:
    """Runs waiting to start, per priority."""
    return {"high": 0, "low": 0, **(store.get(DEPTH_KEY) or {})}


def waiting(tx: Tx, priority: str) -> int:
    return (tx.get(DEPTH_KEY) or {}).get(priority, 0)


def count(tx: Tx, priority: str, delta: int, *, client: str | None = None) -> int:
    """Move the waiting count of ``priority`` (and of ``client``'s, if given) by ``delta``; returns the
    count of ``priority`` before."""
    limits.count_waiting(tx, client, delta)
    depth = {"high": 0, "low": 0, **(tx.get(DEPTH_KEY) or {})}
    before = depth[priority]
    depth[priority] = max(0, before + delta)
    tx.put(DEPTH_KEY, depth)
    return before


def mark_failed(tx: Tx, run_id: str, error: dict, *, only_owner: str | None, run: dict | None = None) -> dict | None:
    """Fail the run in ``tx`` unless it has ended (or, with ``only_owner``, belongs to another task);
    returns it if it failed now (or had failed by this owner's own earlier commit)."""
    run = run or tx.get(run_key(run_id))
    if run is not None and run["state"] == FAILED and only_owner and run["owner"] == only_owner:
        return run  # our own earlier commit, whose reply the store lost: report it again
    if run is None or run["state"] in TERMINAL:
        return None
    if only_owner is not None and run["owner"] not in (None, only_owner):
        return None
    if run["state"] == QUEUED:
        count(tx, run["priority"], -1, client=run.get("client"))
        backlog.leave(tx, run)
    run.update(state=FAILED, error=error, finished_at=time.time(), deadline=None)
    tx.put(run_key(run_id), run)
    forget(tx, run)
    return run


def forget(tx: Tx, run: dict) -> None:
    """Drop the dedup entry that points at ``run`` (the next identical upload starts afresh)."""
    pointer = tx.get(dedup_pointer(run["key"]))
    if pointer and pointer["run_id"] == run["id"]:
        tx.delete(dedup_pointer(run["key"]))
