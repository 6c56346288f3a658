"""A job's life as Server-Sent Events (``GET /v1/jobs/{id}/events``), read from the store.

The store holds each job's transitions as its timestamps (created, started, finished) and its status,
written in the transactions that change them; the stream replays them in order and then follows them:
``queued`` (id 1), ``running`` (id 2), then one of ``succeeded``/``failed``/``canceled`` (id 3), each
with the job object as data, and ``position`` events (no id) while the job's place in the queue
changes. A transition that happened between two looks is still sent, from its timestamp, so none is
missed. ``Last-Event-ID`` resumes after that event; the stream ends after the terminal one. Since it
reads only the store, any API process serves any job's stream, and a reconnect may land on another.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool

QUEUED_ID, RUNNING_ID, TERMINAL_ID = 1, 2, 3


def resume_after(last_event_id: str | None) -> int:
    """The id of the last event a reconnecting client saw; 0 for none (or one that is not ours)."""
    try:
        return max(0, min(TERMINAL_ID, int((last_event_id or "0").strip())))
    except ValueError:
        return 0


async def job_events(read: Callable[[], dict], *, after: int, poll_s: float,
                     gone: Callable[[], object]) -> AsyncIterator[dict]:
    """The events of the job that ``read()`` returns (its API object, blocking), after event ``after``.

    ``gone()`` (awaitable) is true once the client hung up."""
    sent, position = after, None
    while True:
        job = await run_in_threadpool(read)
        for event_id, event in _due(job, sent):
            yield {"id": str(event_id), "event": event, "data": json.dumps(job)}
            sent = event_id
        if sent >= TERMINAL_ID:
            return
        place = (job.get("queue") or {}).get("position") if job["status"] == "queued" else None
        if place is not None and place != position:
            yield {"event": "position", "data": json.dumps({"id": job["id"], **job["queue"]})}
        position = place
        if await gone():
            return
        await asyncio.sleep(poll_s)


def _due(job: dict, sent: int) -> list[tuple[int, str]]:
    """The transitions of ``job`` not yet sent, oldest first."""
    status = job["status"]
    due = []
    if sent < QUEUED_ID:
        due.append((QUEUED_ID, "queued"))
    if sent < RUNNING_ID and (status == "running" or (status != "queued" and job["started_at"])):
        due.append((RUNNING_ID, "running"))
    if sent < TERMINAL_ID and status in ("succeeded", "failed", "canceled"):
        due.append((TERMINAL_ID, status))
    return due
