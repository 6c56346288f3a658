"""Jobs and runs: what a client asked for, and the one model run that serves all identical asks.

A *job* is one client request. A *run* is one execution of the model on one
audio blob with one model and one set of options; every job points at a run.
Identical audio + model + options map to one dedup key, and the key to at most
one live or finished run, so the model never runs twice for the same question:

- no run, or the last one failed  -> a new run is created and must be published
- a run is queued or running       -> the job joins it (coalesced)
- a run has succeeded              -> the job reuses its output at once (cache)

A job's status is derived from its run (plus its own cancellation), so joining,
finishing and failing are single atomic writes however many jobs share a run.

The store also counts the runs waiting per priority (``depth``), in the same
transactions that move runs in and out of ``queued``; a new run past
``max_queued_<priority>`` is refused with Overloaded (HTTP 429).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from emotionq.clock import iso
from emotionq.errors import Conflict, NotFound, Overloaded
from emotionq.settings import Priority, Settings
from emotionq.store import Store, Tx

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})
LEASE_GRACE_S = 60.0
ORPHAN_AFTER_S = 60.0  # a queued run still unpublished this long after creation lost its publisher
DEPTH_KEY = "depth"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def dedup_key(*, sha256: str, model: str, options: dict) -> str:
    """The identity of a question: same audio bytes, same model, same options."""
    canon = json.dumps({"audio": sha256, "model": model, "options": options}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def _job_key(job_id: str) -> str:
    return f"job:{job_id}"


def _run_key(run_id: str) -> str:
    return f"run:{run_id}"


def queue_depth(store: Store) -> dict[str, int]:
    """Runs waiting to start, per priority."""
    return {"high": 0, "low": 0, **(store.get(DEPTH_KEY) or {})}


def _waiting(tx: Tx, priority: str) -> int:
    return (tx.get(DEPTH_KEY) or {}).get(priority, 0)


def _count(tx: Tx, priority: str, delta: int) -> int:
    """Move the waiting count of ``priority`` by ``delta``; returns the count before."""
    depth = {"high": 0, "low": 0, **(tx.get(DEPTH_KEY) or {})}
    before = depth[priority]
    depth[priority] = max(0, before + delta)
    tx.put(DEPTH_KEY, depth)
    return before


@dataclass(frozen=True)
class Submission:
    job: dict
    run: dict
    outcome: str  # "new" | "coalesced" | "cache" | "idempotent"
    publish: bool  # the caller must publish a message for this run (new, or raised priority)


def submit(
    store: Store,
    *,
    settings: Settings,
    client: str,
    priority: Priority,
    input: dict,
    options: dict,
    metadata: dict,
    model: str,
    webhook: dict | None = None,
    idempotency_key: str | None = None,
) -> Submission:
    """Create a job and attach it to a run, atomically with every concurrent submission."""
    key = dedup_key(sha256=input["sha256"], model=model, options=options)
    fingerprint = dedup_key(sha256=input["sha256"], model=model,
                            options={**options, "priority": priority, "webhook": webhook, "metadata": metadata})
    idem_key = f"idem:{client}:{idempotency_key}" if idempotency_key else None
    job_id, fresh_run_id = new_id("job"), new_id("run")
    run_ttl = max(settings.job_ttl_seconds, settings.result_ttl_seconds)

    def tx_submit(tx: Tx) -> Submission:
        now = time.time()
        if idem_key:
            earlier = tx.get(idem_key)
            if earlier is not None:
                if earlier["fingerprint"] != fingerprint:
                    raise Conflict(
                        "this Idempotency-Key was used for a different request; use a new key",
                        code="idempotency_key_reused",
                    )
                job = tx.get(_job_key(earlier["job_id"]))
                if job is not None:
                    return Submission(job, tx.get(_run_key(job["run_id"])), "idempotent", False)

        pointer = tx.get(f"dedup:{key}")
        run = tx.get(_run_key(pointer["run_id"])) if pointer else None
        publish = False
        if run is not None and run["state"] == SUCCEEDED:
            outcome = "cache"
        elif run is not None and run["state"] in (QUEUED, RUNNING):
            outcome = "coalesced"
            run["jobs"].append(job_id)
            if run["state"] == QUEUED and not run.get("published_at") and now - run["created_at"] > ORPHAN_AFTER_S:
                publish = True  # its publisher died before publishing: publish it now, or nothing ever will
            if (priority == "high" and run["priority"] != "high" and run["state"] == QUEUED
                    and _waiting(tx, "high") < settings.max_queued_high):
                run["priority"] = "high"  # re-publish at high priority; the first message to arrive wins
                _count(tx, "low", -1)
                _count(tx, "high", +1)
                publish = True
        else:
            outcome, publish = "new", True
            waiting = _count(tx, priority, +1)
            if waiting >= settings.max_queued(priority):
                raise Overloaded(f"{waiting} {priority}-priority jobs are waiting, the most this service queues; "
                                 "retry later")
            run = {
                "id": fresh_run_id, "key": key, "sha256": input["sha256"], "model": model,
                "options": options, "duration_s": input["duration_s"], "priority": priority,
                "state": QUEUED, "jobs": [job_id], "created_at": now, "started_at": None,
                "finished_at": None, "published_at": None, "owner": None, "deliveries": 0, "retries": 0,
                "deadline": None, "worker": None, "output": None, "error": None,
            }
            tx.put(f"dedup:{key}", {"run_id": run["id"]}, ttl=run_ttl)
        tx.put(_run_key(run["id"]), run, ttl=run_ttl)
        job = {
            "id": job_id, "run_id": run["id"], "client": client, "priority": priority,
            "created_at": now, "canceled_at": None, "input": input, "options": options,
            "metadata": metadata, "dedup": None if outcome == "new" else outcome, "webhook": webhook,
        }
        tx.put(_job_key(job_id), job, ttl=settings.job_ttl_seconds)
        if idem_key:
            tx.put(idem_key, {"job_id": job_id, "fingerprint": fingerprint}, ttl=settings.job_ttl_seconds)
        return Submission(job, run, outcome, publish)

    return store.transact(tx_submit)


def mark_published(store: Store, *, run_id: str) -> None:
    """Record that the broker confirmed a message for the run (so it is not an orphan)."""

    def tx_mark(tx: Tx) -> None:
        run = tx.get(_run_key(run_id))
        if run is not None and not run.get("published_at"):
            run["published_at"] = time.time()
            tx.put(_run_key(run_id), run)

    store.transact(tx_mark)


def abandon_run(store: Store, *, run_id: str, error: dict) -> None:
    """A run whose message could not be published: fail it and forget its dedup entry."""
    store.transact(lambda tx: _fail(tx, run_id, error, only_owner=None))


def load(store: Store, *, job_id: str, client: str,
         on_fail: Callable[[dict, str], None] | None = None) -> tuple[dict, dict]:
    """A job and its run; another client's job is reported as missing.

    A running run whose lease has expired (its worker vanished) is failed here,
    and ``on_fail(run, "job.failed")`` tells the webhooks.
    """
    job = store.get(_job_key(job_id))
    if job is None or job["client"] != client:
        raise NotFound(f"no job {job_id!r}; check the id (jobs are kept for a limited time)")
    run = store.get(_run_key(job["run_id"]))
    if run is None:
        raise NotFound(f"job {job_id!r} has expired")
    if run["state"] == RUNNING and run["deadline"] and run["deadline"] < time.time():
        error = {"code": "worker_lost", "message": "the worker stopped answering before the job finished",
                 "retryable": True}
        failed = store.transact(lambda tx: _fail(tx, run["id"], error, only_owner=run["owner"]))
        if failed and on_fail:
            on_fail(failed, "job.failed")
        run = store.get(_run_key(job["run_id"])) or run
    return job, run


def status_of(job: dict, run: dict) -> str:
    return CANCELED if job["canceled_at"] else run["state"]


def cancel(store: Store, *, job_id: str, client: str) -> None:
    """Cancel a job that has not finished. Its run stops only if no other job still wants it: a queued
    run is canceled here; a running one by its worker, which checks between forward passes
    (``stop_if_unwanted``)."""

    def tx_cancel(tx: Tx) -> None:
        job = tx.get(_job_key(job_id))
        if job is None or job["client"] != client:
            raise NotFound(f"no job {job_id!r}")
        run = tx.get(_run_key(job["run_id"]))
        if job["canceled_at"] or run is None or run["state"] in TERMINAL:
            raise Conflict("the job has already finished; nothing to cancel", code="job_finished")
        job["canceled_at"] = time.time()
        tx.put(_job_key(job_id), job)
        run["jobs"] = [j for j in run["jobs"] if j != job_id]
        if not run["jobs"] and run["state"] == QUEUED:
            run["state"], run["finished_at"] = CANCELED, time.time()
            _count(tx, run["priority"], -1)
            _forget(tx, run)
        tx.put(_run_key(run["id"]), run)

    store.transact(tx_cancel)


def withdraw(store: Store, *, run_id: str, priority: Priority, error: dict) -> tuple[str, dict | None]:
    """Take back a run whose message an operator is removing from the queue (``emotionq purge``).

    Returns ("failed", run) if the run was waiting at ``priority``: it is failed with ``error`` now;
    ("gone", run) if it had already ended or expired: the message was stale; otherwise ("kept", run):
    it is running or waits at the other priority, and its message must go back to the queue.
    """

    def tx_withdraw(tx: Tx) -> tuple[str, dict | None]:
        run = tx.get(_run_key(run_id))
        if run is None or run["state"] in TERMINAL:
            return "gone", run
        if run["state"] != QUEUED or run["priority"] != priority:
            return "kept", run
        return "failed", _fail(tx, run_id, error, only_owner=None, run=run)

    return store.transact(tx_withdraw)


# --- the worker side -------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    run: dict | None
    go: bool
    reason: str  # "claimed" | "redelivered" | "missing" | "finished" | "duplicate" | "poison"


def claim(store: Store, *, run_id: str, task_id: str, worker: str, max_deliveries: int,
          hard_limit_s: float) -> Claim:
    """Take a run for this task. Duplicate messages, finished runs and poison runs are skipped."""

    def tx_claim(tx: Tx) -> Claim:
        run = tx.get(_run_key(run_id))
        if run is None:
            return Claim(None, False, "missing")
        if run["state"] in TERMINAL:
            return Claim(run, False, "finished")
        if run["state"] == RUNNING and run["owner"] != task_id:
            return Claim(run, False, "duplicate")
        reason = "claimed"
        if run["state"] == RUNNING:  # our own message again: the worker that had it died
            run["deliveries"] += 1
            reason = "redelivered"
            if run["deliveries"] > max_deliveries:
                _fail(tx, run_id, {
                    "code": "worker_lost",
                    "message": f"the job stopped its worker {max_deliveries} times; it will not be tried again",
                    "retryable": False,
                }, only_owner=None, run=run)
                return Claim(run, False, "poison")
        else:
            run["deliveries"] = 1
            _count(tx, run["priority"], -1)
        now = time.time()
        run.update(state=RUNNING, owner=task_id, worker=worker, deadline=now + hard_limit_s + LEASE_GRACE_S)
        run["started_at"] = run["started_at"] or now
        tx.put(_run_key(run_id), run)
        return Claim(run, True, reason)

    return store.transact(tx_claim)


def record_decoded(store: Store, *, run_id: str, task_id: str, duration_s: float) -> None:
    """Record how long the audio really is, once decoded (a header may claim anything)."""

    def tx_record(tx: Tx) -> None:
        run = tx.get(_run_key(run_id))
        if run is not None and run["state"] == RUNNING and run["owner"] == task_id:
            run["decoded_duration_s"] = round(duration_s, 3)
            tx.put(_run_key(run_id), run)

    store.transact(tx_record)


def stop_if_unwanted(store: Store, *, run_id: str, task_id: str) -> dict | None:
    """Cancel our running run if every job that wanted it was canceled; returns it if so.

    The worker calls this between forward passes. Deciding and recording in one transaction means
    a job that joins meanwhile either keeps the run going or, once it is canceled, starts a new one.
    """
    run = store.get(_run_key(run_id))
    if run is None or run["jobs"] or run["state"] != RUNNING or run["owner"] != task_id:
        return None  # the cheap, usual answer: somebody still wants it

    def tx_stop(tx: Tx) -> dict | None:
        run = tx.get(_run_key(run_id))
        if run is None or run["jobs"] or run["state"] != RUNNING or run["owner"] != task_id:
            return None
        run.update(state=CANCELED, finished_at=time.time(), deadline=None)
        tx.put(_run_key(run_id), run)
        _forget(tx, run)
        return run

    return store.transact(tx_stop)


def complete(store: Store, *, run_id: str, task_id: str, output: dict, settings: Settings) -> dict | None:
    """Record a result; later identical requests reuse it. Returns the run, or None if it was taken from us."""

    def tx_complete(tx: Tx) -> dict | None:
        run = tx.get(_run_key(run_id))
        if run is not None and run["state"] == SUCCEEDED and run["owner"] == task_id:
            return run  # our own earlier commit, whose reply the store lost: report it again
        if run is None or run["state"] != RUNNING or run["owner"] != task_id:
            return None
        run.update(state=SUCCEEDED, output=output, finished_at=time.time(), deadline=None)
        ttl = max(settings.job_ttl_seconds, settings.result_ttl_seconds)
        tx.put(_run_key(run_id), run, ttl=ttl)
        tx.put(f"dedup:{run['key']}", {"run_id": run_id}, ttl=settings.result_ttl_seconds)
        return run

    return store.transact(tx_complete)


def fail(store: Store, *, run_id: str, error: dict, task_id: str | None = None) -> dict | None:
    """Record a failure; the next identical request starts a fresh run. Returns the run if it failed now."""
    return store.transact(lambda tx: _fail(tx, run_id, error, only_owner=task_id))


def requeue(store: Store, *, run_id: str, task_id: str) -> None:
    """Put a run back to queued before a retry of a transient fault."""

    def tx_requeue(tx: Tx) -> None:
        run = tx.get(_run_key(run_id))
        if run is not None and run["state"] == RUNNING and run["owner"] == task_id:
            run.update(state=QUEUED, owner=None, deadline=None, retries=run["retries"] + 1)
            _count(tx, run["priority"], +1)
            tx.put(_run_key(run_id), run)

    store.transact(tx_requeue)


def _fail(tx: Tx, run_id: str, error: dict, *, only_owner: str | None, run: dict | None = None) -> dict | None:
    run = run or tx.get(_run_key(run_id))
    if run is not None and run["state"] == FAILED and only_owner and run["owner"] == only_owner:
        return run  # our own earlier commit, whose reply the store lost: report it again
    if run is None or run["state"] in TERMINAL:
        return None
    if only_owner is not None and run["owner"] not in (None, only_owner):
        return None
    if run["state"] == QUEUED:
        _count(tx, run["priority"], -1)
    run.update(state=FAILED, error=error, finished_at=time.time(), deadline=None)
    tx.put(_run_key(run_id), run)
    _forget(tx, run)
    return run


def _forget(tx: Tx, run: dict) -> None:
    pointer = tx.get(f"dedup:{run['key']}")
    if pointer and pointer["run_id"] == run["id"]:
        tx.delete(f"dedup:{run['key']}")


# --- what clients see ------------------------------------------------------------


def view(job: dict, run: dict, deliveries: list[dict] | None = None) -> dict[str, Any]:
    """The job object of the HTTP API; ``deliveries`` are its webhook deliveries so far."""
    status = status_of(job, run)
    created = job["created_at"]
    if job["dedup"] == "cache":
        started = finished = created
    else:
        started = max(run["started_at"], created) if run["started_at"] else None
        finished = job["canceled_at"] or (max(run["finished_at"], created) if run["finished_at"] else None)
    return {
        "id": job["id"],
        "status": status,
        "priority": job["priority"],
        "created_at": iso(created),
        "started_at": iso(started) if status != CANCELED or run["started_at"] else None,
        "finished_at": iso(finished) if status in TERMINAL else None,
        "input": {**job["input"], "duration_s": run.get("decoded_duration_s") or job["input"]["duration_s"]},
        "options": job["options"],
        "metadata": job["metadata"],
        "output": run["output"] if status == SUCCEEDED else None,
        "error": run["error"] if status == FAILED else None,
        "dedup": {"reused": job["dedup"] is not None, "source": job["dedup"], "run_id": run["id"]},
        "webhook": {**job["webhook"], "deliveries": deliveries or []} if job.get("webhook") else None,
    }
