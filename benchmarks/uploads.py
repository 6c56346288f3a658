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
  one process): the baseline of dedup-hit uploads/s, which parse, hash, authenticate and answer from
  the store besides. The two are measured in alternating rounds (ROUNDS of each), so that the load
  others put on the machine meanwhile falls on both alike, and with the CPU time each server's
  processes spent per request (/proc), which others' load changes less than rates;
- dedup hits with two API processes (EMOTIONQ_API_WORKERS=2, a second API on the same store) against
  one, alternating too, with the clients pinned to the first core and the API processes to the last
  (taskset's affinity: every thread of the API's processes), so that the clients run elsewhere than the API. On a 2-core
  machine that leaves the two processes one core: the row shows what a second process costs or
  gives where it has no core of its own, not how the API scales with cores.

The clients share this machine (and one Python process) with the API: absolute rates are lower than
from elsewhere, the ratios less so.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.common import (
    ROOT,
    Context,
    Row,
    Service,
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
ROUNDS = 10  # alternating rounds of each side of a ratio


def run(ctx: Context) -> list[Row]:
    per_client = 20 if ctx.quick else 100
    per_round = per_client // ROUNDS
    work = ctx.workdir(NAME)
    [cached] = distinct_clips(work / "cached", [CLIP_S])
    fresh = [p.read_bytes() for p in distinct_clips(work / "fresh", [CLIP_S] * (CLIENTS * per_client))]
    body = cached.read_bytes()
    upload = lambda c, i: c.post("/v1/jobs", files={"file": ("a.wav", body)})  # noqa: E731
    to_bare = lambda c, i: c.post("/upload", files={"file": ("a.wav", body)})  # noqa: E731
    with service(work, checkpoint("tiny"), EMOTIONQ_MAX_QUEUED_LOW="1000000") as svc:
        svc.start_worker()
        finish_all(svc, [svc.submit(cached).json()["id"]])
        svc.stop("worker")
        auth = {"Authorization": svc.http.headers["Authorization"]}
        health = load(svc.url, auth, per_client, 200, lambda c, i: c.get("/healthz"))
        with bare_upload(work / "bare") as (url, bare_pid):
            hits, bare = alternate(lambda: load(svc.url, auth, per_round, 200, upload, server=svc.procs["api"].pid),
                                   lambda: load(url, {}, per_round, 200, to_bare, server=bare_pid))
        new = load(svc.url, auth, per_client, 202, lambda c, i: c.post("/v1/jobs", files={"file": ("a.wav", fresh[i])}))
        with second_api(svc, work, EMOTIONQ_API_WORKERS="2") as two:
            with pinned([svc.procs["api"].pid, two.procs["api-2"].pid]) as where:
                hits_1, hits_2 = alternate(lambda: load(svc.url, auth, per_round, 200, upload),
                                           lambda: load(two.url, auth, per_round, 200, upload))
    ctx.detail(NAME).update(clients=CLIENTS, bytes=len(body), rounds=ROUNDS, pinned=where, **{
        name: {k: v for k, v in r.items() if k != "latencies_ms"} for name, r in (
            ("healthz", health), ("dedup_hit", hits), ("new_upload", new), ("bare_fastapi_upload", bare),
            ("dedup_hit_1_process_pinned", hits_1), ("dedup_hit_2_processes_pinned", hits_2))})
    note = f"{CLIENTS} clients x {per_client}, {len(body) / 1024:.0f} KiB WAV"
    return [
        Row(NAME, "dedup-hit latency p50", hits["p50_ms"], "ms", health["p50_ms"], "GET /healthz p50", notes=note),
        Row(NAME, "dedup-hit latency p99", hits["p99_ms"], "ms", health["p99_ms"], "GET /healthz p99", notes=note),
        Row(NAME, "dedup-hit uploads/s", hits["per_s"], "uploads/s", bare["per_s"],
            "bare FastAPI UploadFile to disk",
            notes=f"{note}; {ROUNDS} alternating rounds each; goal >= 0.6; server CPU per request "
                  f"{hits['cpu_ms']:.2f} vs {bare['cpu_ms']:.2f} ms; GET /healthz {health['per_s']:.0f}/s"),
        Row(NAME, "dedup-hit uploads/s, 2 API processes", hits_2["per_s"], "uploads/s", hits_1["per_s"],
            "1 API process", notes=f"{note}; EMOTIONQ_API_WORKERS=2 vs 1, alternating; {where}; goal >= 1.0"),
        Row(NAME, "new-audio uploads/s", new["per_s"], "uploads/s", hits["per_s"], "dedup hits, same size",
            notes=f"{note}; new p50 {new['p50_ms']:.0f} ms, p99 {new['p99_ms']:.0f} ms; no worker: jobs queue"),
    ]


def alternate(first, second) -> tuple[dict, dict]:
    """``first()`` and ``second()`` (each a ``load``) in ROUNDS alternating rounds, the order flipped each
    round; each side's rounds merged (rate over their summed wall time, percentiles of all latencies)."""
    sides: tuple[list[dict], list[dict]] = ([], [])
    for k in range(ROUNDS):
        for side in ((0, 1) if k % 2 == 0 else (1, 0)):
            sides[side].append((first, second)[side]())
    return merge(sides[0]), merge(sides[1])


def merge(results: list[dict]) -> dict:
    flat = [x for r in results for x in r["latencies_ms"]]
    wall = sum(r["wall_s"] for r in results)
    cpu = [r["cpu_ms"] * r["n"] for r in results if r.get("cpu_ms") is not None]
    return {"n": len(flat), "wall_s": wall, "per_s": len(flat) / wall, "p50_ms": percentile(flat, 50),
            "p99_ms": percentile(flat, 99), "mean_ms": sum(flat) / len(flat), "rounds": len(results),
            "cpu_ms": sum(cpu) / len(flat) if len(cpu) == len(results) else None, "latencies_ms": flat}


@contextlib.contextmanager
def second_api(svc: Service, work, **env: str):
    """Another API of the same service (same store, broker and keys) on a port of its own, with ``env``."""
    other = Service(env={**{k: v for k, v in svc.env.items() if k != "EMOTIONQ_PORT"}, **env}, workdir=work)
    try:
        other.spawn("api-2", "api")
        other.wait_until(lambda: httpx.get(f"{other.url}/healthz", timeout=1).status_code == 200, 60, "api-2")
        yield other
    finally:
        other.stop_all()


@contextlib.contextmanager
def pinned(api_pids: list[int]):
    """The API processes (and their children) on the last core, the client threads started meanwhile by
    this thread on the first; a description of where. Nothing is pinned on a 1-core machine."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        yield "not pinned: 1 core"
        return
    threads = [t for pid in api_pids for p in _tree(pid) for t in _threads(p)]
    for t in threads:
        os.sched_setaffinity(t, {cores[-1]})
    os.sched_setaffinity(0, {cores[0]})  # this thread; the client threads it starts inherit it
    try:
        yield f"clients pinned to core {cores[0]}, API processes to core {cores[-1]} ({len(cores)} cores; Redis unpinned)"
    finally:
        os.sched_setaffinity(0, cores)
        for t in threads:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(t, cores)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (/proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(d for c in children for d in _tree(int(c)))]


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


@contextlib.contextmanager
def bare_upload(directory):
    """``benchmarks.bare_upload`` under uvicorn, one process, on a free port: its URL and process id."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "benchmarks.bare_upload:app", "--port", str(port),
                             "--no-access-log", "--log-level", "warning"], cwd=ROOT,
                            env={**os.environ, "BARE_UPLOAD_DIR": str(directory)})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", 60)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def load(url: str, headers: dict, per_client: int, expect: int, request, *, server: int | None = None) -> dict:
    """``request(client, i)`` per_client times on each of CLIENTS threads; latencies and the rate, and with
    ``server`` (a process id) the CPU time its processes spent per request."""
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
        cpu = _cpu_s(server) if server else None
        began = time.perf_counter()
        for f in futures:
            f.result()
        wall = time.perf_counter() - began
        cpu = _cpu_s(server) - cpu if server else None
    flat = [x * 1e3 for xs in latencies for x in xs]
    return {"n": len(flat), "wall_s": wall, "per_s": len(flat) / wall, "p50_ms": percentile(flat, 50),
            "p99_ms": percentile(flat, 99), "mean_ms": sum(flat) / len(flat), "latencies_ms": flat,
            "cpu_ms": cpu * 1e3 / len(flat) if server else None}


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds of ``pid`` and its descendants so far (/proc)."""
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total
