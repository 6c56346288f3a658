"""A real HTTP server on loopback that serves recordings for jobs by URL, and misbehaves on request.

``/files/<name>`` serves ``server.files[name]``; ``/redirect?to=URL`` redirects there; ``/loop`` redirects
to itself; ``/never`` accepts the request and never answers; ``/endless`` streams bytes without end (no
length); ``/lying-length`` declares ``huge`` bytes; ``/html`` is a web page; ``/status/N`` answers N.
Every request is recorded (path and Host header).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class AudioServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                parts = urlsplit(self.path)
                server.requests.append({"path": parts.path, "host": self.headers.get("Host")})
                if parts.path.startswith("/files/") and parts.path[7:] in server.files:
                    return self._send(200, server.files[parts.path[7:]], "audio/wav")
                if parts.path == "/redirect":
                    return self._redirect(parse_qs(parts.query)["to"][0])
                if parts.path == "/loop":
                    return self._redirect("/loop")
                if parts.path == "/never":
                    while not server.stopping.wait(0.2):
                        pass
                    return None
                if parts.path == "/endless":
                    self.send_response(200)
                    self.send_header("content-type", "audio/wav")
                    self.send_header("connection", "close")
                    self.end_headers()
                    chunk = b"\0" * 65536
                    while not server.stopping.is_set():
                        try:
                            self.wfile.write(chunk)
                        except OSError:
                            return None
                    return None
                if parts.path == "/lying-length":
                    self.send_response(200)
                    self.send_header("content-length", str(10**12))
                    self.end_headers()
                    return None
                if parts.path == "/html":
                    return self._send(200, b"<!doctype html><html><body>Not found, but 200</body></html>",
                                      "text/html")
                if parts.path.startswith("/status/"):
                    return self._send(int(parts.path[8:]), b"", "text/plain")
                return self._send(404, b"", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _redirect(self, to: str) -> None:
                self.send_response(302)
                self.send_header("location", to)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def seen(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.stopping.set()
        time.sleep(0.1)
        self.server.shutdown()
        self.server.server_close()
