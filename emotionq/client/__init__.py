"""A Python client of the HTTP API: submit audio, read a job, wait for it (pushed, as Server-Sent
Events, or by long polls where the stream is not there), follow its events, cancel it.

    with Client("http://127.0.0.1:8000", "eq_...") as api:
        job = api.wait(api.submit("call.wav", priority="high")["id"], timeout=300)

Every problem comes back as one exception, :class:`emotionq.errors.APIError` (``status``, ``code``,
``detail``, ``retry_after``). 429 and 503 answers and lost connections are retried with exponential
backoff and full jitter, never sooner than ``Retry-After``; each upload carries an ``Idempotency-Key``,
so a retried upload never makes a second job.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
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


class Client:
    """One API key's view of an emotionq API; safe to share between threads."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0, retries: int = 6,
                 backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        headers = {"User-Agent": f"emotionq-client/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, path: str | Path, *, priority: str = "low", granularity: str = "utterance",
               embedding: bool = False, metadata: dict | None = None, webhook_url: str | None = None,
               webhook_events: list[str] | None = None, wait: float = 0, idempotency_key: str | None = None,
               options: dict[str, str] | None = None) -> dict:
        """Upload one recording; the job as the API answered (finished at once when its result was reused,
        or within ``wait`` seconds). ``options``: more form fields (segmentation, channels, channel_names, ...)."""
        path = Path(path)
        fields = {"priority": priority, "granularity": granularity, "embedding": str(embedding).lower(),
                  **(options or {})}
        if metadata is not None:
            fields["metadata"] = json.dumps(metadata)
        if webhook_url:
            fields["webhook_url"] = webhook_url
        if webhook_events:
            fields["webhook_events"] = ",".join(webhook_events)
        headers = {"Idempotency-Key": idempotency_key or uuid4().hex, **_prefer(wait)}

        def send() -> httpx.Response:
            with path.open("rb") as f:  # reopened on every attempt: a retry sends the whole file again
                return self._http.post("/v1/jobs", files={"file": (path.name, f)}, data=fields, headers=headers,
                                       timeout=self.timeout + wait)

        return self._call(send)

    def job(self, job_id: str, *, wait: float = 0) -> dict:
        """The job now, or once it finishes if that happens within ``wait`` seconds (a long poll)."""
        return self._call(lambda: self._http.get(_job_path(job_id), headers=_prefer(wait),
                                                 timeout=self.timeout + wait))

    def events(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[tuple[str, str | None, dict]]:
        """The job's Server-Sent Events as (event, id, data): queued, position, running, then its end; and
        ("ping", None, {}) for each heartbeat (every 15 s), so that a caller can keep time."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 3 * EVENT_PING_S))  # heartbeats keep it alive
        with self._http.stream("GET", f"{_job_path(job_id)}/events", headers=headers, timeout=timeout) as response:
            if not response.is_success:
                response.read()
                raise problem(response)
            block: dict[str, str] = {}
            for line in response.iter_lines():
                if not line:
                    if "data" in block:
                        yield block.get("event", "message"), block.get("id"), json.loads(block["data"])
                    block = {}
                elif line.startswith(":"):  # ": ping" heartbeats are comments
                    yield "ping", None, {}
                else:
                    field, _, value = line.partition(":")
                    block[field] = value.removeprefix(" ")

    def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """The job once it has finished, or as it stands after ``timeout`` seconds (None: no limit).

        It follows the job's events; if the stream breaks or the API has none, it long-polls."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for event, _, data in self.events(job_id):
                if event in TERMINAL:
                    return data
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except (APIError, httpx.HTTPError, ValueError):  # dropped, or an API without events: poll instead
            pass
        return self._poll(job_id, deadline)

    def _poll(self, job_id: str, deadline: float | None) -> dict:
        while True:
            left = LONG_POLL_S if deadline is None else deadline - time.monotonic()
            asked = max(0.0, min(left, LONG_POLL_S))
            started = time.monotonic()
            job = self.job(job_id, wait=asked)
            if job["status"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return job
            if time.monotonic() - started < min(asked, 1.0):  # the API caps waits lower: poll at most 1/s
                time.sleep(min(asked, 1.0) - (time.monotonic() - started))

    def cancel(self, job_id: str) -> dict:
        """Cancel a job that has not finished; the job afterwards."""
        return self._call(lambda: self._http.post(f"{_job_path(job_id)}/cancel"))

    def _call(self, send: Callable[[], httpx.Response]) -> dict:
        for attempt in itertools.count():
            try:
                response = send()
            except httpx.TransportError as exc:
                error = APIError(f"{self.base_url} did not answer ({type(exc).__name__}: {exc}); is the API "
                                 "running, and is EMOTIONQ_API_URL right?", code="unreachable", retryable=True)
            else:
                if response.is_success:
                    return response.json()
                error = problem(response)
            if attempt >= self.retries or not (error.status is None or error.status in RETRY_STATUSES):
                raise error
            ceiling = min(self.max_backoff, self.backoff * 2 ** attempt)
            time.sleep(max(error.retry_after or 0.0, random.uniform(0, ceiling)))


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
