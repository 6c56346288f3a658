"""``AsyncClient``: the API from async code (asyncio or trio), over ``httpx.AsyncClient``; the same methods as
``Client``, awaited, built on the same calls (``emotionq.client.calls``)."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
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


class AsyncClient(BaseClient):
    """One API key's view of an emotionq API, for async code; options as for ``BaseClient``.

        async with AsyncClient("http://127.0.0.1:8000", "eq_...") as api:
            job = await api.wait((await api.submit("call.wav"))["id"], timeout=300)
    """

    def _open(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(self, path: str | Path, *, priority: str = "low", granularity: str = "utterance",
                     embedding: bool = False, metadata: dict | None = None, webhook_url: str | None = None,
                     webhook_events: list[str] | None = None, wait: float = 0, idempotency_key: str | None = None,
                     options: dict[str, str] | None = None) -> dict:
        """Upload one recording: as ``Client.submit``."""
        return await self._call(self._submit_call(
            path, priority=priority, granularity=granularity, embedding=embedding, metadata=metadata,
            webhook_url=webhook_url, webhook_events=webhook_events, wait=wait, idempotency_key=idempotency_key,
            options=options))

    async def job(self, job_id: str, *, wait: float = 0) -> dict:
        """The job now, or once it finishes within ``wait`` seconds: as ``Client.job``."""
        return await self._call(self._job_call(job_id, wait))

    async def cancel(self, job_id: str) -> dict:
        """Cancel a job that has not finished: as ``Client.cancel``."""
        return await self._call(self._cancel_call(job_id))

    async def models(self) -> list[dict]:
        """What the live workers serve now: as ``Client.models``."""
        return (await self._call(self._models_call()))["models"]

    async def events(self, job_id: str, *, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """The job's Server-Sent Events (``async for``): as ``Client.events``."""
        async for event in self._events(self._events_call(job_id, last_event_id)):
            yield event

    async def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """The job once it has finished, or as it stands after ``timeout`` seconds: as ``Client.wait``."""
        following = Following(self, job_id, timeout, self._events_call)
        while not following.expired():
            try:
                async with contextlib.aclosing(self._events(following.call())) as events:
                    async for event in events:
                        if (job := following.seen(event)) is not None:
                            return job
                        if following.expired():
                            break
                reason: str | Exception = "closed before the job finished"
            except httpx.TransportError as exc:
                reason = exc
            except APIError as exc:
                if exc.status is None or exc.status in RETRY_STATUSES:
                    raise
                return await self._poll(job_id, following.deadline)
            if following.expired():
                break
            pause = following.dropped(reason)
            if pause is None:
                return await self._poll(job_id, following.deadline)
            await anyio.sleep(pause)
        return await self.job(job_id)

    async def _events(self, call: Call) -> AsyncIterator[Event]:
        response = await self._send(call, stream=True)
        try:
            check_stream(response)
            parser = EventParser()
            async for line in response.aiter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event
        finally:
            await response.aclose()

    async def _poll(self, job_id: str, deadline: float | None) -> dict:
        while True:
            asked, started = poll_wait(deadline), time.monotonic()
            job = await self.job(job_id, wait=asked)
            if job["status"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return job
            if time.monotonic() - started < min(asked, 1.0):
                await anyio.sleep(min(asked, 1.0) - (time.monotonic() - started))

    async def _call(self, call: Call) -> dict:
        return (await self._send(call)).json()  # read whole: nothing to close

    async def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        """A successful answer to ``call``, after retries; the caller closes it (a stream is still open)."""
        for attempt in itertools.count():
            try:
                with call.request(self._http) as request:
                    response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                error = self._unreachable(exc)
            else:
                if response.is_success:
                    return response
                await response.aread()
                await response.aclose()
                error = problem(response)
            await anyio.sleep(self._retry_in(error, attempt))
