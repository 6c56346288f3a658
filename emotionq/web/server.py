"""The API's HTTP server: uvicorn with emotionq's logging, connection cap and slow-client guard.

``python -m emotionq.web.server`` is what ``emotionq api`` runs.

uvicorn times out idle keep-alive connections, but a connection that sends its request line and
headers one byte at a time is never timed out (each byte resets nothing, and nothing waits on
it), so a few hundred such clients hold every connection slot. Here every request's line and
headers must arrive within ``EMOTIONQ_HTTP_HEADER_TIMEOUT_S`` of the connection opening (or of
the previous response's end): past it the server answers 408 and closes. Bodies are bounded
by ``EMOTIONQ_HTTP_BODY_TIMEOUT_S`` in ``emotionq.web.upload``, and the number of connections by
uvicorn's ``--limit-concurrency``. Production deployments should still sit behind a reverse
proxy with its own limits (docs/operating/safety.md).

Every connection also gets TCP_NODELAY here: asyncio sets it only on sockets whose protocol number is
TCP, and the listening socket uvicorn opens itself for several processes (``EMOTIONQ_API_WORKERS``) has
0, so without this each answer (headers and body, two writes) waited out the client's delayed ACK:
about 40 ms a request.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket

import h11
import uvicorn
from prometheus_client import Counter
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from emotionq import metrics
from emotionq.settings import get_settings

log = logging.getLogger(__name__)

TIMED_OUT = Counter("emotionq_http_header_timeouts", "Connections closed because a request's headers did not "
                    "arrive within EMOTIONQ_HTTP_HEADER_TIMEOUT_S")
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol whose connections must deliver each request's headers before a deadline."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = get_settings().http_header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # first: nothing that may fail below can leave a connection without its deadline
        no_delay(transport.get_extra_info("socket"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's headers are in: it is the app's now
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # keep-alive: the next request's headers get the same time
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expire(self) -> None:
        self._header_deadline = None
        waiting_for_headers = self.conn.their_state is h11.IDLE
        answered = self.conn.our_state in (h11.DONE, h11.MUST_CLOSE)  # and still being sent a body
        if self.transport.is_closing() or not (waiting_for_headers or answered):
            return  # a request in progress: the upload's own timeout applies
        TIMED_OUT.inc()
        log.info("%s: no request headers within %g s; closing the connection", self.client, self.header_timeout_s)
        if self.conn.our_state is h11.IDLE:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def no_delay(sock) -> None:
    """Send small writes at once (TCP_NODELAY) on a TCP connection's socket."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # the peer is already gone: the connection's own reads will say so
            log.debug("TCP_NODELAY on a closing connection: %s", exc)


def log_config() -> dict:
    """uvicorn's logging, plus emotionq's own loggers at INFO in the same format."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["emotionq"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def main() -> None:
    s = get_settings()
    with metrics.api_processes(s.api_workers):
        uvicorn.run("emotionq.api:create_app", factory=True, host=s.host, port=s.port, access_log=False,
                    http=HeaderDeadlineProtocol, limit_concurrency=s.http_max_connections,
                    timeout_keep_alive=s.http_keep_alive_s, log_config=log_config(), workers=s.api_workers)


if __name__ == "__main__":
    main()
