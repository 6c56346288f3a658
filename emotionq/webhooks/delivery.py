"""Webhook deliveries: one record per (job, event), one signed POST per attempt, a retry schedule.

The record holds the body, so every attempt sends the same bytes under the same
``webhook-id``; only ``webhook-timestamp`` (and so the signature) changes. An
attempt first takes a short lease on the record, so duplicate messages never
POST twice at once, and a delivered record is never sent again unless a client
asks for a redelivery.

Outcomes: 2xx delivered; 410 Gone stops at once; anything else (3xx included:
redirects are never followed), timeouts and connection errors retry on the
schedule, honouring ``Retry-After`` on 429 and 5xx; after the last step the
delivery is failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

from emotionq import metrics
from emotionq.errors import InvalidRequest
from emotionq.jobs import Job, iso
from emotionq.retrying import retry_after_s
from emotionq.settings import Settings
from emotionq.store import Store, Tx
from emotionq.webhooks import secrets, targets

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
LEASE_S = 60.0
JITTER = 0.1
MAX_RETRY_AFTER_S = 24 * 3600
HISTORY = 10
USER_AGENT = "emotionq-webhooks/1"
INDEX = "deliveries"  # pending records, scored by when the janitor should look whether they stalled
CHECK_AFTER_S = 120.0


def key(job_id: str, event: str) -> str:
    return f"delivery:{job_id}:{event}"


def message_id(job_id: str, event: str) -> str:
    """Stable per (job, event): the receiver's idempotency key across every retry."""
    return "msg_" + hashlib.sha256(f"{job_id}:{event}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Policy:
    schedule: tuple[float, ...]  # delay before attempt n+1, in seconds; its length bounds the attempts
    timeout_s: float
    allow: list

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(schedule=settings.webhook_retry_schedule, timeout_s=settings.webhook_timeout_s,
                   allow=settings.webhook_allow_networks)


def create(store: Store, *, job: Job, event: str, data: dict, ttl: int) -> dict:
    """The record for (job, event), created pending if it does not exist yet."""
    now = time.time()
    body = json.dumps({"type": event, "timestamp": iso(now), "data": data}, separators=(",", ":"))

    def tx_create(tx: Tx) -> dict:
        existing = tx.get(key(job.id, event))
        if existing is not None:
            return existing
        record = {"id": message_id(job.id, event), "job_id": job.id, "client": job.client,
                  "event": event, "url": job.webhook["url"], "body": body, "state": PENDING,
                  "attempts": 0, "created_at": now, "next_attempt_at": now, "lease_until": None,
                  "delivered_at": None, "last_status": None, "last_error": None, "history": []}
        tx.put(key(job.id, event), record, ttl=ttl)
        tx.index(INDEX, key(job.id, event), now + CHECK_AFTER_S)  # the janitor re-queues it if it stalls
        return record

    return store.transact(tx_create)


def attempt(store: Store, *, job_id: str, event: str, policy: Policy, http: httpx.Client) -> float | None:
    """Make one attempt if one is due. Returns seconds until the next is due, or None when done."""
    record = _lease(store, key(job_id, event))
    if isinstance(record, float) or record is None:
        return record
    signing = secrets.active(store, client=record["client"])
    started = time.perf_counter()
    status, error, retry_after = None, None, None
    try:
        target = targets.check(record["url"], allow=policy.allow)  # again: DNS may have changed since submission
        url, host, extensions = target.pinned()  # connect to the address just checked, not a fresh lookup
        now = datetime.now(timezone.utc)
        headers = {
            **host,
            "webhook-id": record["id"],
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": secrets.signature_header(signing, msg_id=record["id"], timestamp=now,
                                                          body=record["body"]),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        response = http.post(url, content=record["body"].encode(), headers=headers, extensions=extensions,
                             timeout=policy.timeout_s, follow_redirects=False)
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = retry_after_s(response.headers.get("retry-after"), cap_s=MAX_RETRY_AFTER_S)
        if not 200 <= status < 300:
            error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
    except InvalidRequest as exc:
        error = exc.message
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    elapsed_ms = round((time.perf_counter() - started) * 1e3, 1)
    log.info("webhook %s %s -> %s %s (%.0f ms)", record["id"], record["url"], status, error or "", elapsed_ms)
    delay = _record_attempt(store, record, status=status, error=error, retry_after=retry_after, policy=policy,
                            elapsed_ms=elapsed_ms)
    metrics.observe_webhook_attempt("delivered" if error is None else "retry" if delay is not None else "failed")
    return delay


def _lease(store: Store, k: str) -> dict | float | None:
    """Take the record for one attempt: the record, or seconds to wait, or None if nothing to do."""

    def tx_lease(tx: Tx):
        record = tx.get(k)
        if record is None or record["state"] != PENDING:
            return None
        now = time.time()
        if record["lease_until"] and record["lease_until"] > now:
            return None  # another message is attempting it right now
        if record["next_attempt_at"] > now:
            return record["next_attempt_at"] - now
        record["lease_until"] = now + LEASE_S
        tx.put(k, record)
        return record

    return store.transact(tx_lease)


def _record_attempt(store: Store, record: dict, *, status, error, retry_after, policy: Policy, elapsed_ms) -> float | None:
    def tx_record(tx: Tx) -> float | None:
        current = tx.get(key(record["job_id"], record["event"])) or record
        now = time.time()
        current["attempts"] += 1
        current.update(last_status=status, last_error=error, lease_until=None)
        current["history"] = (current["history"] + [
            {"at": now, "status": status, "error": error, "ms": elapsed_ms}])[-HISTORY:]
        delay = None
        if error is None:
            current.update(state=DELIVERED, delivered_at=now, next_attempt_at=None)
        elif status == 410 or current["attempts"] >= len(policy.schedule):
            current.update(state=FAILED, next_attempt_at=None)
        else:
            delay = policy.schedule[current["attempts"]] * random.uniform(1 - JITTER, 1 + JITTER)
            if retry_after is not None:
                delay = max(delay, retry_after)
            current["next_attempt_at"] = now + delay
        tx.put(key(record["job_id"], record["event"]), current)
        return delay

    return store.transact(tx_record)


def redeliver(store: Store, *, job_id: str, events: list[str]) -> list[str]:
    """Make finished deliveries of a job pending again (same webhook-id); returns the events reset."""

    def tx_redeliver(tx: Tx) -> list[str]:
        reset = []
        for event in events:
            record = tx.get(key(job_id, event))
            if record is None or record["state"] == PENDING:
                continue
            record.update(state=PENDING, next_attempt_at=time.time(), attempts=0, lease_until=None)
            tx.put(key(job_id, event), record)
            tx.index(INDEX, key(job_id, event), time.time() + CHECK_AFTER_S)
            reset.append(event)
        return reset

    return store.transact(tx_redeliver)


def for_job(store: Store, job: Job) -> list[dict]:
    """The job's deliveries so far, as shown on the job object."""
    if not job.webhook:
        return []
    records = (store.get(key(job.id, event)) for event in job.webhook["events"])
    return [view(r) for r in records if r is not None]


def view(record: dict) -> dict:
    """A delivery as shown on the job object."""
    return {"event": record["event"], "id": record["id"], "status": record["state"],
            "attempts": record["attempts"], "last_status": record["last_status"],
            "last_error": record["last_error"], "next_attempt_at": iso(record["next_attempt_at"]),
            "delivered_at": iso(record["delivered_at"])}

