"""Slow readers of a job's Server-Sent Events and a ``/healthz`` prober: the load of
tests/web/test_events_load.py and of the ``events`` benchmark."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

RECEIVE_BUFFER = 32 * 1024  # a small kernel buffer, so that the server feels how slowly each one reads


@dataclass
class SlowReader:
    """One client that opens the stream and reads ``read_bytes`` every ``pause_s`` until told to stop."""

    port: int
    path: str
    key: str
    read_bytes: int = 16 * 1024
    pause_s: float = 0.02
    received: int = 0
    first_byte_s: float | None = None
    ended: bool = False  # the server closed the stream
    head: bytes = b""  # the first bytes after the headers: the first event
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        began = time.monotonic()
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
                s.connect(("127.0.0.1", self.port))
                s.settimeout(1.0)
                s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.key}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
                while not self._stop.is_set():
                    try:
                        chunk = s.recv(self.read_bytes)
                    except socket.timeout:
                        continue
                    if not chunk:
                        self.ended = True
                        return
                    if self.first_byte_s is None:
                        self.first_byte_s = time.monotonic() - began
                    if len(self.head) < 4096:
                        self.head += chunk[:4096]
                    self.received += len(chunk)
                    self._stop.wait(self.pause_s)
        except OSError as exc:
            self.error = repr(exc)


class Prober:
    """GET /healthz every ``period_s`` from a process of its own (so that the readers' threads do not
    delay it): each probe's start (s) and latency (ms; a failure counts as inf)."""

    def __init__(self, url: str, *, period_s: float = 0.02) -> None:
        self.url, self.period_s = url, period_s
        self.times_s: list[float] = []
        self.latencies_ms: list[float] = []

    def __enter__(self) -> Prober:
        self._proc = subprocess.Popen([sys.executable, __file__, self.url, str(self.period_s)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout.readline().strip() == "probing"
        return self

    def __exit__(self, *exc) -> None:
        out, _ = self._proc.communicate("stop\n", timeout=60)
        self.times_s, self.latencies_ms = json.loads(out)


def _probe(url: str, period_s: float) -> None:
    """The prober's process: probes until a line arrives on stdin, then prints [times_s, latencies_ms]."""
    stop, times, latencies = threading.Event(), [], []
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    with httpx.Client(base_url=url, timeout=30) as http:
        http.get("/healthz")  # connected before the first measured probe
        print("probing", flush=True)
        start = time.perf_counter()
        while not stop.is_set():
            began = time.perf_counter()
            try:
                ok = http.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            times.append(began - start)
            latencies.append((time.perf_counter() - began) * 1e3 if ok else float("inf"))
            stop.wait(period_s)
    print(json.dumps([times, latencies]))


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def api_pid(supervisor_pid: int) -> int:
    """The uvicorn process that `emotionq api` (a supervisor) runs."""
    children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@dataclass
class Load:
    """What ``load`` measured: /healthz latencies, the API's resident memory, and the readers."""

    latencies_ms: list[float]
    rss_idle_mb: float
    rss_peak_mb: float
    readers: list[SlowReader]
    times_s: list[float]
    stalled: list[SlowReader]


def load(*, port: int, job_id: str, key: str, pid: int, readers: int = 40, stalled: int = 0, seconds: float = 15.0,
         stagger_s: float = 0.025) -> Load:
    """``readers`` slow readers of the job's events and ``stalled`` ones (they read once, then never),
    opening their streams ``stagger_s`` apart (forty connections in the same millisecond cost the API a
    burst of authentication work of their own, whatever the route), for ``seconds`` while /healthz is
    probed and the resident memory of the API process ``pid`` is sampled."""
    idle = rss_mb(pid)
    path = f"/v1/jobs/{job_id}/events"
    slow = [SlowReader(port, path, key) for _ in range(readers)]
    still = [SlowReader(port, path, key, pause_s=3600) for _ in range(stalled)]
    peak, threads = idle, []
    with Prober(f"http://127.0.0.1:{port}") as prober:
        deadline = time.monotonic() + seconds
        for client in still + slow:
            threads.append(client.start())
            peak = max(peak, rss_mb(pid))
            time.sleep(stagger_s)
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(pid))
            time.sleep(0.05)
        for client in still + slow:
            client.stop()
        for thread in threads:
            thread.join()
    return Load(prober.latencies_ms, idle, peak, slow, prober.times_s, still)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


if __name__ == "__main__":
    _probe(sys.argv[1], float(sys.argv[2]))
