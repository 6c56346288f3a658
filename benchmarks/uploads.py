"""Dedup-hit latency and upload throughput under 8 concurrent clients.

One API (tiny checkpoint: the model plays no part, a worker runs only to cache one result and is
stopped). Each load runs 8 threads, each with its own httpx client and connection, started
together after a warm-up request:

- healthz: GET /healthz, the same server's bare HTTP cost (no key, no store): the baseline of
  dedup-hit latency and of dedup-hit throughput;
- dedup hits: re-uploading a 5 s WAV whose result is cached (200 at once, no message published);
- new uploads: 5 s WAVs of the same size, each new (202: stored, probed, queued with a confirmed
  publish); its baseline is the dedup hits, so the ratio is the price of queueing a new job over
  answering a known one for the same bytes;
- a bare FastAPI endpoint that saves the same upload to disk (``benchmarks.bare_upload``, uvicorn,
  one process): the baseline of dedup-hit uploads/s, which parse, hash, probe, authenticate and
  answer from the store besides;
- dedup hits again with EMOTIONQ_API_WORKERS=2 (two API processes on one port) against one.

The clients share this 2-core machine (and one Python process) with the API: absolute rates are
lower than from elsewhere, the ratios less so.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from benchmarks.common import (
    ROOT,
    Context,
    Row,
    checkpoint,
    distinct_clips,
    finish_all,
    percentile,
    service,
    wait_http,
)
from harness import free_port

NAME = "uploads"
CLIENTS = 8
CLIP_S = 5


def run(ctx: Context) -> list[Row]:
    per_client = 10 if ctx.quick else 100
    work = ctx.workdir(NAME)
    [cached] = distinct_clips(work / "cached", [CLIP_S])
    fresh = [p.read_bytes() for p in distinct_clips(work / "fresh", [CLIP_S] * (CLIENTS * per_client))]
    body = cached.read_bytes()
    upload = lambda c, i: c.post("/v1/jobs", files={"file": ("a.wav", body)})  # noqa: E731
    with service(work, checkpoint("tiny"), EMOTIONQ_MAX_QUEUED_LOW="1000000") as svc:
        svc.start_worker()
        finish_all(svc, [svc.submit(cached).json()["id"]])
        svc.stop("worker")
        auth = {"Authorization": svc.http.headers["Authorization"]}
        health = load(svc.url, auth, per_client, 200, lambda c, i: c.get("/healthz"))
        hits = load(svc.url, auth, per_client, 200, upload)
        new = load(svc.url, auth, per_client, 202, lambda c, i: c.post("/v1/jobs", files={"file": ("a.wav", fresh[i])}))
        svc.stop("api")
        svc.env["EMOTIONQ_API_WORKERS"] = "2"
        svc.start_api()
        hits_2 = load(svc.url, auth, per_client, 200, upload)
    with bare_upload(work / "bare") as url:
        bare = load(url, {}, per_client, 200, lambda c, i: c.post("/upload", files={"file": ("a.wav", body)}))
    ctx.detail(NAME).update(clients=CLIENTS, bytes=len(body), healthz=health, dedup_hit=hits, new_upload=new,
                            dedup_hit_2_processes=hits_2, bare_fastapi_upload=bare)
    note = f"{CLIENTS} clients x {per_client}, {len(body) / 1024:.0f} KiB WAV"
    return [
        Row(NAME, "dedup-hit latency p50", hits["p50_ms"], "ms", health["p50_ms"], "GET /healthz p50", notes=note),
        Row(NAME, "dedup-hit latency p99", hits["p99_ms"], "ms", health["p99_ms"], "GET /healthz p99", notes=note),
        Row(NAME, "dedup-hit uploads/s", hits["per_s"], "uploads/s", bare["per_s"],
            "bare FastAPI UploadFile to disk", notes=f"{note}; goal >= 0.8; GET /healthz {health['per_s']:.0f}/s"),
        Row(NAME, "dedup-hit uploads/s, 2 API processes", hits_2["per_s"], "uploads/s", hits["per_s"],
            "1 API process", notes=f"{note}; EMOTIONQ_API_WORKERS=2; the clients share the 2 cores"),
        Row(NAME, "new-audio uploads/s", new["per_s"], "uploads/s", hits["per_s"], "dedup hits, same size",
            notes=f"{note}; new p50 {new['p50_ms']:.0f} ms, p99 {new['p99_ms']:.0f} ms; no worker: jobs queue"),
    ]


@contextlib.contextmanager
def bare_upload(directory):
    """``benchmarks.bare_upload`` under uvicorn, one process, on a free port: its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "benchmarks.bare_upload:app", "--port", str(port),
                             "--no-access-log", "--log-level", "warning"], cwd=ROOT,
                            env={**os.environ, "BARE_UPLOAD_DIR": str(directory)})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", 60)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def load(url: str, headers: dict, per_client: int, expect: int, request) -> dict:
    """``request(client, i)`` per_client times on each of CLIENTS threads; latencies and the rate."""
    start = threading.Barrier(CLIENTS + 1)
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]

    def client(k: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            c.get("/healthz").raise_for_status()  # connect first
            start.wait()
            for i in range(k * per_client, (k + 1) * per_client):
                began = time.perf_counter()
                r = request(c, i)
                latencies[k].append(time.perf_counter() - began)
                if r.status_code != expect:
                    raise RuntimeError(f"expected {expect}, got {r.status_code}: {r.text[:300]}")

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, k) for k in range(CLIENTS)]
        start.wait(timeout=60)
        began = time.perf_counter()
        for f in futures:
            f.result()
        wall = time.perf_counter() - began
    flat = [x * 1e3 for xs in latencies for x in xs]
    return {"n": len(flat), "wall_s": wall, "per_s": len(flat) / wall, "p50_ms": percentile(flat, 50),
            "p99_ms": percentile(flat, 99), "mean_ms": sum(flat) / len(flat)}
