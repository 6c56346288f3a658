"""What ``Client`` and ``AsyncClient`` share: each API call built as an httpx request, its answer read, the
retry schedule, and a job's event stream parsed and followed. Only the sending differs between the two.

Nothing here needs more than httpx and the standard library (``Retry-After`` is read by emotionq.retrying,
shared with webhook deliveries): the client installs without the server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote
from uuid import uuid4

import httpx

from emotionq import __version__
from emotionq.errors import APIError
from emotionq.retrying import retry_after_s

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
RETRY_STATUSES = frozenset({429, 503})
LONG_POLL_S = 60.0  # the longest `Prefer: wait` one request asks for (the API's default cap)
EVENT_PING_S = 15.0  # the API's heartbeat interval on event streams (EMOTIONQ_EVENTS_PING_S)

log = logging.getLogger("emotionq.client")


class Event(NamedTuple):
    """One Server-Sent Event of a job: queued (id 1), position, running (id 2), then its end (id 3), each with
    the job as ``data``; ``ping`` (no id, no data) for each heartbeat."""

    event: str
    id: str | None
    data: dict


PING = Event("ping", None, {})


@dataclass(frozen=True)
class Call:
    """One API call, built afresh for every attempt: an upload reopens its file, so a retry sends it whole."""

    method: str
    url: str
    headers: dict[str, str]
    timeout: float | httpx.Timeout
    data: dict[str, str] | None = None
    upload: Path | None = None

    @contextlib.contextmanager
    def request(self, http: httpx.Client | httpx.AsyncClient) -> Iterator[httpx.Request]:
        """The request for ``http`` to send; an uploaded file stays open until the block ends."""
        with contextlib.ExitStack() as stack:
            files = None
            if self.upload is not None:
                files = {"file": (self.upload.name, stack.enter_context(self.upload.open("rb")))}
            yield http.build_request(self.method, self.url, headers=self.headers, data=self.data, files=files,
                                     timeout=self.timeout)


class BaseClient:
    """The calls of the API and the reading of its answers, for both clients.

    ``timeout``: seconds for a request (plus its ``wait``); ``retries``, ``backoff``, ``max_backoff``: how 429,
    503 and lost connections are retried; ``events_timeout``: how long an event stream may stay silent before
    it is dropped and resumed (default: three of the API's 15 s heartbeats)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0, retries: int = 6,
                 backoff: float = 0.5, max_backoff: float = 30.0, events_timeout: float | None = None) -> None:
        self.headers = {"User-Agent": f"emotionq-client/{__version__}"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        # How long an event stream may stay silent before it is dropped and resumed: three heartbeats.
        self.events_timeout = events_timeout or max(timeout, 3 * EVENT_PING_S)
        self._http = self._open()

    def _open(self) -> httpx.Client | httpx.AsyncClient:
        """The httpx client the calls go through (blocking or async)."""
        raise NotImplementedError

    def _submit_call(self, path: str | Path, *, priority: str, granularity: str, embedding: bool,
                     metadata: dict | None, webhook_url: str | None, webhook_events: list[str] | None, wait: float,
                     idempotency_key: str | None, options: dict[str, str] | None) -> Call:
        fields = {"priority": priority, "granularity": granularity, "embedding": str(embedding).lower(),
                  **(options or {})}
        if metadata is not None:
            fields["metadata"] = json.dumps(metadata)
        if webhook_url:
            fields["webhook_url"] = webhook_url
        if webhook_events:
            fields["webhook_events"] = ",".join(webhook_events)
        headers = {"Idempotency-Key": idempotency_key or uuid4().hex, **_prefer(wait)}
        return Call("POST", "/v1/jobs", headers, self.timeout + wait, data=fields, upload=Path(path))

    def _job_call(self, job_id: str, wait: float) -> Call:
        return Call("GET", _job_path(job_id), _prefer(wait), self.timeout + wait)

    def _cancel_call(self, job_id: str) -> Call:
        return Call("POST", f"{_job_path(job_id)}/cancel", {}, self.timeout)

    def _models_call(self) -> Call:
        return Call("GET", "/v1/models", {}, self.timeout)

    def _events_call(self, job_id: str, last_event_id: str | None, deadline: float | None = None) -> Call:
        """A stream read with a timeout of ``events_timeout``, or less where the caller's deadline comes first:
        a silent stream is dropped then (and resumed, if there is time left)."""
        read = self.events_timeout if deadline is None else max(0.05, min(self.events_timeout,
                                                                           deadline - time.monotonic()))
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        return Call("GET", f"{_job_path(job_id)}/events", headers, httpx.Timeout(self.timeout, read=read))

    def _unreachable(self, exc: httpx.TransportError) -> APIError:
        return APIError(f"{self.base_url} did not answer ({type(exc).__name__}: {exc}); is the API running, and is "
                        "EMOTIONQ_API_URL right?", code="unreachable", retryable=True)

    def _retry_in(self, error: APIError, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential backoff with full jitter, never sooner
        than ``Retry-After``. Raises ``error`` when it is not worth retrying, or the retries are spent."""
        if attempt >= self.retries or not (error.status is None or error.status in RETRY_STATUSES):
            raise error
        ceiling = min(self.max_backoff, self.backoff * 2 ** attempt)
        return max(error.retry_after or 0.0, random.uniform(0, ceiling))


class Following:
    """One ``wait`` on a job's event stream: the last event seen, to resume after, and the drops in a row.

    A stream that drops (a restart, a proxy's idle timeout, a read timeout) is reopened with
    ``Last-Event-ID``, so no transition is missed or repeated; after ``retries`` drops in a row with
    nothing received the waiter polls instead."""

    def __init__(self, client: BaseClient, job_id: str, timeout: float | None,
                 events_call: Callable[[str, str | None, float | None], Call]) -> None:
        self.client, self.job_id, self.events_call = client, job_id, events_call
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last_id: str | None = None
        self.drops = 0

    def call(self) -> Call:
        return self.events_call(self.job_id, self.last_id, self.deadline)

    def seen(self, event: Event) -> dict | None:
        """The job, once ``event`` says it has finished."""
        self.drops = 0
        if event.id is not None:
            self.last_id = event.id
        return event.data if event.event in TERMINAL else None

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def dropped(self, reason: str | Exception) -> float | None:
        """Seconds to wait before reopening the stream; None: it keeps breaking, poll instead."""
        silent = isinstance(reason, httpx.ReadTimeout)  # it has been silent for events_timeout already
        if isinstance(reason, Exception):
            reason = f"{type(reason).__name__} {reason}".strip()
        if self.drops >= self.client.retries:
            log.info("event stream of %s keeps dropping (%s): polling instead", self.job_id, reason)
            return None
        log.info("event stream of %s dropped (%s); resuming after event %s", self.job_id, reason, self.last_id)
        self.drops += 1
        if silent:
            return 0.0
        return random.uniform(0, min(self.client.max_backoff, self.client.backoff * 2 ** (self.drops - 1)))


class EventParser:
    """Server-Sent Events from a stream's lines: an Event at the end of each block, PING for each comment."""

    def __init__(self) -> None:
        self._block: dict[str, str] = {}

    def feed(self, line: str) -> Event | None:
        if not line:
            block, self._block = self._block, {}
            return Event(block.get("event", "message"), block.get("id"), json.loads(block["data"])) \
                if "data" in block else None
        if line.startswith(":"):  # ": ping" heartbeats are comments
            return PING
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self._block[name] = f"{self._block[name]}\n{value}" if name == "data" and name in self._block else value
        return None


def transcript(job: dict) -> dict[str, str]:
    """Each channel's transcript of a finished job asked with ``transcript=true`` (empty without one)."""
    channels = ((job or {}).get("output") or {}).get("channels") or []
    return {c["name"]: c["transcript"] for c in channels if "transcript" in c}


def check_stream(response: httpx.Response) -> None:
    """Raises ``no_event_stream`` when a successful answer is not an event stream (a proxy, an older API)."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        raise APIError(f"{response.request.url} answered {response.headers.get('content-type')!r}, not an event "
                       "stream", code="no_event_stream", status=response.status_code)


def poll_wait(deadline: float | None) -> float:
    """The ``Prefer: wait`` of the next long poll: up to ``LONG_POLL_S``, no further than the deadline."""
    left = LONG_POLL_S if deadline is None else deadline - time.monotonic()
    return max(0.0, min(left, LONG_POLL_S))


def problem(response: httpx.Response) -> APIError:
    """The API's problem+json answer as an exception (or the status line, if the body is not one)."""
    retry_after = retry_after_s(response.headers.get("Retry-After"))
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return APIError(str(body.get("detail") or body.get("title") or response.reason_phrase), code=body["code"],
                        status=response.status_code, retryable=bool(body.get("retryable")), retry_after=retry_after)
    return APIError(f"{response.reason_phrase}: {response.text[:200]}", code=f"http_{response.status_code}",
                    status=response.status_code, retryable=response.status_code in RETRY_STATUSES,
                    retry_after=retry_after)


def _prefer(wait: float) -> dict[str, str]:
    return {"Prefer": f"wait={wait:.3f}"} if wait > 0 else {}


def _job_path(job_id: str) -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}"
