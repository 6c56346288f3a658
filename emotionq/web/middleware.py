"""The API's ASGI middleware: request metrics, and the answer to an error nothing else handled."""

from __future__ import annotations

import logging
import time

from emotionq import metrics
from emotionq.errors import ServerFault
from emotionq.web import problems

log = logging.getLogger(__name__)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Started:
    """Wraps ``send`` to note the response's status once it starts (None until then)."""

    def __init__(self, send) -> None:
        self.send, self.status = send, None

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class _HTTPMiddleware:
    """Middleware of HTTP requests only: ``handle`` gets ``send`` wrapped in ``_Started``."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, _Started(send))

    async def handle(self, scope, receive, started: _Started) -> None:
        raise NotImplementedError


class HTTPMetrics(_HTTPMiddleware):
    """Counts and times every request by its route template (``/v1/jobs/{job_id}``)."""

    async def handle(self, scope, receive, started: _Started) -> None:
        began = time.perf_counter()
        try:
            await self.app(scope, receive, started)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"  # set by the router on a match
            method = scope["method"] if scope["method"] in METHODS else "other"
            metrics.observe_request(method, route, started.status or 500, time.perf_counter() - began)


class UnexpectedErrors(_HTTPMiddleware):
    """An exception no handler took is logged once, with its traceback, and answered as a problem.

    (An ``Exception`` handler would not do: Starlette re-raises after calling it, and the server
    logs the same error a second time.)
    """

    async def handle(self, scope, receive, started: _Started) -> None:
        try:
            await self.app(scope, receive, started)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if started.status is None:  # else the answer is cut short; the client sees the connection end
                fault = ServerFault("an unexpected error occurred; it has been logged")
                await problems.response(fault)(scope, receive, started.send)
