"""``Client``: the API from plain (blocking) code, over ``httpx.Client``; safe to share between threads."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from emotionq.client.calls import (
    RETRY_STATUSES,
    TERMINAL,
    BaseClient,
    Call,
    Event,
    EventParser,
    Following,
    check_stream,
    poll_wait,
    problem,
)
from emotionq.errors import APIError


class Client(BaseClient):
    """One API key's view of an emotionq API; options as for ``BaseClient``."""

    def _open(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

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
        or within ``wait`` seconds). ``options``: more form fields (segmentation, channels, channel_names,
        transcript, language, itn, ...); with ``transcript`` each segment has ``text``, ``language``, ``events``
        and ``emotion_tag``, and ``transcript(job)`` gives each channel's text."""
        return self._call(self._submit_call(
            path, priority=priority, granularity=granularity, embedding=embedding, metadata=metadata,
            webhook_url=webhook_url, webhook_events=webhook_events, wait=wait, idempotency_key=idempotency_key,
            options=options))

    def job(self, job_id: str, *, wait: float = 0) -> dict:
        """The job now, or once it finishes if that happens within ``wait`` seconds (a long poll)."""
        return self._call(self._job_call(job_id, wait))

    def cancel(self, job_id: str) -> dict:
        """Cancel a job that has not finished; the job afterwards."""
        return self._call(self._cancel_call(job_id))

    def models(self) -> list[dict]:
        """What the live workers serve now (``GET /v1/models``): name, role, id, revision, runtime, workers."""
        return self._call(self._models_call())["models"]

    def events(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's Server-Sent Events, after ``last_event_id``: (event, id, data) tuples; ``ping`` ones for the
        heartbeats, so that a caller can keep time. Ends after the job's last event."""
        yield from self._events(self._events_call(job_id, last_event_id))

    def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """The job once it has finished, or as it stands after ``timeout`` seconds (None: no limit).

        It follows the job's events, resuming after the last one seen when the stream drops; where the API
        answers no stream, it long-polls."""
        following = Following(self, job_id, timeout, self._events_call)
        while not following.expired():
            try:
                with contextlib.closing(self._events(following.call())) as events:
                    for event in events:
                        if (job := following.seen(event)) is not None:
                            return job
                        if following.expired():
                            break
                reason: str | Exception = "closed before the job finished"
            except httpx.TransportError as exc:  # read timeout, reset: a stream that opened, then broke
                reason = exc
            except APIError as exc:
                if exc.status is None or exc.status in RETRY_STATUSES:
                    raise
                return self._poll(job_id, following.deadline)  # the API answered, but with no stream
            if following.expired():
                break
            pause = following.dropped(reason)
            if pause is None:
                return self._poll(job_id, following.deadline)
            time.sleep(pause)
        return self.job(job_id)

    def _events(self, call: Call) -> Iterator[Event]:
        response = self._send(call, stream=True)
        try:
            check_stream(response)
            parser = EventParser()
            for line in response.iter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event
        finally:
            response.close()

    def _poll(self, job_id: str, deadline: float | None) -> dict:
        while True:
            asked, started = poll_wait(deadline), time.monotonic()
            job = self.job(job_id, wait=asked)
            if job["status"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return job
            if time.monotonic() - started < min(asked, 1.0):  # the API caps waits lower: poll at most 1/s
                time.sleep(min(asked, 1.0) - (time.monotonic() - started))

    def _call(self, call: Call) -> dict:
        return self._send(call).json()  # read whole: nothing to close

    def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        """A successful answer to ``call``, after retries; the caller closes it (a stream is still open)."""
        for attempt in itertools.count():
            try:
                with call.request(self._http) as request:
                    response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                error = self._unreachable(exc)
            else:
                if response.is_success:
                    return response
                response.read()
                response.close()
                error = problem(response)
            time.sleep(self._retry_in(error, attempt))
