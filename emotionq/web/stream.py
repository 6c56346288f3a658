"""A job's life as Server-Sent Events (``GET /v1/jobs/{id}/events``), read from the store.

The store holds each job's transitions as its timestamps (created, started, finished) and its status,
written in the transactions that change them; the stream replays them in order and then follows them:
``queued`` (id 1), ``running`` (id 2), then one of ``succeeded``/``failed``/``canceled`` (id 3), and
``position`` events (no id) while the job's place in the queue changes. A transition that happened
between two looks is still sent, from its timestamp, so none is missed. ``Last-Event-ID`` resumes after
that event when it names one this job has had; any other value replays from the start. The stream
ends after the terminal event. Since it reads only the store, any API process serves any job's stream.

What it costs the API: a process's streams of one job share its looks at the store (``Feed``: one per
``EMOTIONQ_EVENTS_POLL_S``, in a thread), each look encodes the event bodies once, and the job's output
is passed on as the store holds it (``rawjson``), never decoded or encoded here: tens of megabytes of
frames would hold the interpreter lock for seconds. A body is written in pieces of ``CHUNK_BYTES``,
each once the connection has taken the last, so a slow reader holds at most a piece and uvicorn's
buffer (64 KiB) of its own, plus a share of the look; one that takes no piece for
``EMOTIONQ_EVENTS_SEND_TIMEOUT_S`` is disconnected (it may resume with ``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.concurrency import run_in_threadpool

from emotionq.jobs import SUCCEEDED, TERMINAL, Job, Run
from emotionq.jobs.records import get_job, run_from_doc, run_key
from emotionq.web import rawjson
from emotionq.webhooks import delivery

log = logging.getLogger(__name__)
QUEUED_ID, RUNNING_ID, TERMINAL_ID = 1, 2, 3
EVENT_IDS = {str(i): i for i in (QUEUED_ID, RUNNING_ID, TERMINAL_ID)}
CHUNK_BYTES = 64 * 1024
PING = b": ping\r\n\r\n"


def resume_after(last_event_id: str | None) -> int:
    """The event a reconnecting client saw last: exactly one of the ids the stream sends, else 0 (none)."""
    return EVENT_IDS.get(last_event_id or "", 0)


@dataclass(eq=False)
class Look:
    """The job as one look at the store found it, its event bodies encoded (``data: …`` and the blank line)."""

    status: str
    started: bool
    place: int | None  # its queue position while queued
    whole: tuple[bytes | memoryview, ...]  # the job object, in parts: the terminal event's body
    before_end: bytes  # the job object without its output: the body of a replayed ``queued`` or ``running``
    position: bytes  # the body of a ``position`` event
    version: tuple  # what the bodies were built from: equal versions, equal bodies
    settled: tuple | None = None  # a finished job's own document and webhook deliveries, when it was read

    def happened(self) -> int:
        """The id of this job's latest event so far."""
        return _due(self, 0)[-1][0]


def take_look(svc, job_id: str, client: str, held: Look | None) -> Look:
    """Look at the job for its events (blocking: call in a thread); ``held``, the last look, is returned
    again when nothing changed, so that streams keep sharing one copy of the bodies (and a heavy body
    is not built again to find that out: its output is compared by digest, which hashlib computes
    without holding the interpreter lock). A finished run never changes: while a finished job's own
    document and its webhook deliveries are as they were, the held look is returned without reading
    the run again (tens of megabytes, whose parse would hold the interpreter lock)."""
    job = None
    if held is not None and held.settled is not None:
        job = get_job(svc.store, job_id)
        if job is not None and job.client == client and (job, delivery.for_job(svc.store, job)) == held.settled:
            return held
    job, run, output = _load(svc, job_id, client, job)
    view = svc.view(job, run)
    succeeded = output is not None and view["status"] == SUCCEEDED
    before_end = _body(json.dumps(view, separators=(",", ":")).encode())
    queue = view["queue"] if view["status"] == "queued" else None
    place = (queue or {}).get("position")
    position = _body(json.dumps({"id": view["id"], **queue}).encode()) if place is not None else b""
    version = (before_end, position, hashlib.blake2b(output).digest() if succeeded else b"")
    if held is not None and held.version == version:
        return held
    whole = _spliced(view, output) if succeeded else (before_end,)
    settled = (job, view["webhook"]["deliveries"] if view["webhook"] else []) if view["status"] in TERMINAL else None
    return Look(view["status"], bool(view["started_at"]), place, whole, before_end, position, version, settled)


def _load(svc, job_id: str, client: str, job: Job | None = None) -> tuple[Job, Run, memoryview | None]:
    """The job (``job``: as just read, else read now), its run without the output, and the output's JSON
    text (None until it has one)."""
    job = job if job is not None else get_job(svc.store, job_id)
    raw = svc.store.get_raw(run_key(job.run_id)) if job is not None and job.client == client else None
    if raw is None:
        return (*svc.load(job_id, client), None)  # raises its NotFound (or the run is there after all)
    rest, output = rawjson.cut(raw, "output")
    return job, run_from_doc(json.loads(rest), job.run_id), output


def _spliced(view: dict, output: memoryview) -> tuple[bytes | memoryview, ...]:
    """The body of ``view`` with ``output`` (JSON text) as its output, in parts: neither decoded nor copied."""
    before, after = rawjson.around(view, "output")
    return b"data: " + before, output, after + b"\r\n\r\n"


def _body(data: bytes) -> bytes:
    return b"data: " + data + b"\r\n\r\n"


class Feed:
    """This API process's looks at jobs for their event streams: one look per job (and client) at a time,
    reused by every stream that asks within ``fresh_s`` of its end."""

    def __init__(self, take: Callable[[str, str, Look | None], Look], *, fresh_s: float) -> None:
        self._take, self._fresh_s = take, fresh_s
        self._looks: dict[tuple[str, str], _Pending] = {}
        self._held: weakref.WeakValueDictionary[tuple[str, str], Look] = weakref.WeakValueDictionary()
        self._swept = time.monotonic()

    async def look(self, job_id: str, client: str) -> Look:
        """The job as it stands, at most ``fresh_s`` old (raises the store's errors, ``NotFound``)."""
        key, now = (client, job_id), time.monotonic()
        pending = self._looks.get(key)
        if pending is None or pending.stale(now, self._fresh_s):
            self._sweep(now)
            task = asyncio.ensure_future(run_in_threadpool(self._take, job_id, client, self._held.get(key)))
            self._looks[key] = pending = _Pending(task)
        look = await asyncio.shield(pending.task)
        self._held[key] = look
        return look

    def _sweep(self, now: float) -> None:
        """Drop the looks nobody asked for lately (at most once per ``fresh_s``)."""
        if now - self._swept >= self._fresh_s:
            self._swept = now
            for key in [k for k, p in self._looks.items() if p.stale(now, self._fresh_s)]:
                del self._looks[key]


class _Pending:
    """A look under way or done, and when it was done."""

    def __init__(self, task: asyncio.Future) -> None:
        self.task, self.done_at = task, None
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future) -> None:
        self.done_at = time.monotonic()
        if not task.cancelled():
            task.exception()  # retrieved: its waiters, if any, raise it

    def stale(self, now: float, fresh_s: float) -> bool:
        return self.done_at is not None and now - self.done_at >= fresh_s


async def job_events(look: Callable[[], Awaitable[Look]], first: Look, *, after: int, poll_s: float,
                     ping_s: float, gone: Callable[[], Awaitable[bool]]) -> AsyncIterator[bytes]:
    """The events of a job after event ``after`` (0 as well when the job has not had it yet), from its
    looks: ``first``, then ``look()`` every ``poll_s``; a ``: ping`` after ``ping_s`` of quiet.
    ``gone()`` is true once the client hung up."""
    sent = after if after <= first.happened() else 0
    current, place, quiet_since = first, None, time.monotonic()
    while True:
        for event_id, event in _due(current, sent):
            for piece in _pieces(event, event_id, current.whole if event_id == TERMINAL_ID else (current.before_end,)):
                yield piece
                await asyncio.sleep(0)  # a turn for every other request between two pieces
            sent, quiet_since = event_id, time.monotonic()
        if sent >= TERMINAL_ID:
            return
        if current.place is not None and current.place != place:
            yield b"event: position\r\n" + current.position
            quiet_since = time.monotonic()
        place = current.place
        if time.monotonic() - quiet_since >= ping_s:
            yield PING
            quiet_since = time.monotonic()
        if await gone():
            return
        await asyncio.sleep(poll_s)
        current = await look()


def _due(look: Look, sent: int) -> list[tuple[int, str]]:
    """The transitions of the job not yet sent, oldest first."""
    due = []
    if sent < QUEUED_ID:
        due.append((QUEUED_ID, "queued"))
    if sent < RUNNING_ID and (look.status == "running" or (look.status != "queued" and look.started)):
        due.append((RUNNING_ID, "running"))
    if sent < TERMINAL_ID and look.status in ("succeeded", "failed", "canceled"):
        due.append((TERMINAL_ID, look.status))
    return due


def _pieces(event: str, event_id: int, body: tuple[bytes | memoryview, ...]) -> Iterator[bytes | memoryview]:
    """One event, its body given in parts, in pieces of at most ``CHUNK_BYTES`` (shared, not copied, until sent)."""
    head = f"event: {event}\r\nid: {event_id}\r\n".encode()
    if sum(len(part) for part in body) <= CHUNK_BYTES:
        yield b"".join((head, *body))
        return
    yield head
    for part in body:
        shared = memoryview(part)
        for at in range(0, len(shared), CHUNK_BYTES):
            yield shared[at:at + CHUNK_BYTES]


class JobEventsResponse(EventSourceResponse):
    """The stream's response: its pings come from ``job_events`` (one writer, so a ping never falls
    between the pieces of an event), and a reader that takes nothing for ``send_timeout`` seconds is
    disconnected with a log line, not a traceback."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("%s: the reader took nothing for %g s; stream closed", scope["path"], self.send_timeout)
