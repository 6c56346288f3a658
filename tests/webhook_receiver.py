"""A real HTTP server on loopback that receives webhooks and answers as each test scripts it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """POST /<name> answers from ``scripts[name]`` (a list of statuses, the last one repeating)."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.requests: list[dict] = []
        self.scripts: dict[str, list[int]] = {}
        self.headers: dict[str, dict[str, str]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                name = self.path.strip("/")
                seen = [r for r in receiver.requests if r["name"] == name]
                script = receiver.scripts.get(name, [200])
                status = script[min(len(seen), len(script) - 1)]
                receiver.requests.append({"name": name, "headers": dict(self.headers), "body": body,
                                          "status": status, "at": time.time()})
                self.send_response(status)
                for k, v in receiver.headers.get(name, {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def received(self, name: str) -> list[dict]:
        return [r for r in self.requests if r["name"] == name]

    def wait(self, name: str, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(name)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{name}: {len(self.received(name))} of {count} webhooks after {timeout} s")

    @staticmethod
    def payload(request: dict) -> dict:
        return json.loads(request["body"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
