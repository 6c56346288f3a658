"""A load test of a running emotionq: `make loadtest` (locust, headless), or `locust -f` this file.

The mix a capacity review asks about: new recordings (mostly low priority, some high), the same
recordings again (answered from the dedup cache), and clients waiting for results by long-polling
(`Prefer: wait`). At the end it prints, per request type: requests, success rate, p50/p95/p99 latency
and throughput, whole jobs (upload to result) included.

Settings (environment): EMOTIONQ_API_KEY (none: an API with EMOTIONQ_AUTH=disabled, as `make run`),
LOADTEST_AUDIO_DIR (recordings to send; default: short synthetic clips made here), LOADTEST_WAIT_S
(how long a client waits for each result, default 60).
"""

from __future__ import annotations

import io
import json
import os
import random
import time
import wave
from pathlib import Path

import numpy as np
from locust import HttpUser, between, events, task

RATE = 16000
WAIT_S = float(os.environ.get("LOADTEST_WAIT_S", "60"))
TERMINAL = {"succeeded", "failed", "canceled"}
_rng = np.random.default_rng()


def _synthetic(seconds: float) -> bytes:
    """A WAV of a voice-like tone sweep with noise, unique to this call (so it is new audio)."""
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 140 + 60 * np.sin(2 * np.pi * 0.7 * t) + _rng.uniform(-20, 20)
    signal = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / RATE) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2)
    signal += _rng.normal(0, 0.01, t.size)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def _recordings() -> list[tuple[str, bytes]]:
    folder = os.environ.get("LOADTEST_AUDIO_DIR")
    if folder:
        return [(p.name, p.read_bytes()) for p in sorted(Path(folder).iterdir()) if p.is_file()]
    return [(f"clip-{i}.wav", _synthetic(seconds)) for i, seconds in enumerate((1.0, 1.5, 2.0, 2.5, 3.0))]


REPEATS = _recordings()  # sent again and again: the dedup cache answers after the first


class Client(HttpUser):
    """One API client: uploads, then waits for each result: high-priority jobs follow their events (SSE), the
    others long-poll."""

    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        key = os.environ.get("EMOTIONQ_API_KEY")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"

    @task(4)
    def new_low(self) -> None:
        self._job("new low", f"new-{random.getrandbits(32):08x}.wav", _synthetic(random.uniform(1, 3)), "low")

    @task(1)
    def new_high(self) -> None:
        self._job("new high", f"urgent-{random.getrandbits(32):08x}.wav", _synthetic(random.uniform(1, 2)), "high")

    @task(3)
    def repeat(self) -> None:
        name, audio = random.choice(REPEATS)
        self._job("repeat", name, audio, "low")

    def _job(self, kind: str, name: str, audio: bytes, priority: str) -> None:
        started = time.monotonic()
        with self.client.post("/v1/jobs", files={"file": (name, audio, "audio/wav")}, data={"priority": priority},
                              name=f"POST /v1/jobs ({kind})", catch_response=True) as r:
            if r.status_code not in (200, 202):
                r.failure(f"{r.status_code} {r.text[:200]}")
                return
            job = r.json()
        deadline = started + WAIT_S
        if priority == "high" and job["status"] not in TERMINAL:  # an interactive user: pushed, not polled
            job = self._follow(job, deadline)
        while job["status"] not in TERMINAL and time.monotonic() < deadline:
            wait = max(1, min(30, int(deadline - time.monotonic())))
            with self.client.get(f"/v1/jobs/{job['id']}", headers={"Prefer": f"wait={wait}"},
                                 name="GET /v1/jobs/{id} (long poll)", catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"{r.status_code} {r.text[:200]}")
                    return
                job = r.json()
        # A job is a request type of its own in the report: from its upload to its result.
        failed = None if job["status"] == "succeeded" else RuntimeError(f"job {job['status']} after {WAIT_S:g} s")
        events.request.fire(request_type="JOB", name=f"job: upload to result ({kind})", context={},
                            response_time=(time.monotonic() - started) * 1000, response_length=0, exception=failed)

    def _follow(self, job: dict, deadline: float) -> dict:
        """Follow the job's Server-Sent Events to its terminal event (or the deadline); the job as last seen."""
        with self.client.get(f"/v1/jobs/{job['id']}/events", stream=True, timeout=WAIT_S,
                             name="GET /v1/jobs/{id}/events (SSE)", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code} {r.text[:200]}")
                return job
            event = None
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:") and event in TERMINAL:
                    return json.loads(line.partition(":")[2])
                if time.monotonic() >= deadline:
                    break
        return job


@events.quitting.add_listener
def report(environment, **_) -> None:
    """The capacity review's table: per request type (jobs included), success rate, latency, throughput."""
    stats = environment.stats
    elapsed = max(1e-9, time.time() - stats.start_time)
    users = getattr(environment.parsed_options, "num_users", None)
    print(f"\nemotionq load test against {environment.host}: {elapsed:.0f} s, {users} users")
    print(f"{'request':46} {'count':>7} {'ok %':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'per s':>7}")
    for entry in sorted(stats.entries.values(), key=lambda e: e.name):
        if not entry.num_requests:
            continue
        ok = 100 * (entry.num_requests - entry.num_failures) / entry.num_requests
        print(f"{entry.name:46} {entry.num_requests:7d} {ok:7.1f} {entry.get_response_time_percentile(0.5):8.0f} "
              f"{entry.get_response_time_percentile(0.95):8.0f} {entry.get_response_time_percentile(0.99):8.0f} "
              f"{entry.num_requests / elapsed:7.2f}")
