"""Waiting: what the queue position costs a GET, and what fair share gives a small client.

Tiny checkpoint, 1 s clips, batching off, one worker.

- GET cost: 50 jobs queued (no worker), each read in turn through two API processes on the same store,
  one with positions (EMOTIONQ_QUEUE_POSITION on: two documents and a rank per read) and one without
  (the GET as before positions); p50 of each, alternating so both see the same load.
- Fair share: with the worker running, client A queues a backlog of low jobs, then client B queues 5;
  B's mean wait (started_at - created_at) with B as a client of its own (turns) against the same
  backlog with B's jobs sent by A (one client: first in, first out).

``scale`` (its own name in ``make bench``): a backlog of 20,000 waiting jobs of 100 clients, uploaded
through the API by 8 threads (distinct 1 s clips, no worker: every job waits), with the documents a
production model name gives (EMOTIONQ_MODEL is the default hub id: the API never loads the model).
Redis's ``used_memory`` grows by the bytes per waiting job (everything a waiting job keeps: its job,
run, dedup pointer and blob documents, and its entries in the backlog and blob indexes). Then submit and
GET (with queue.position) p50 at 20,000 waiting against the same on an empty twin service (its own Redis
database and RabbitMQ virtual host, on the same servers), measured in alternating rounds so that the
load others put on the machine falls on both alike.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import redis
import soundfile as sf

from benchmarks.common import (
    TWIN_REDIS_DB,
    Context,
    Row,
    Service,
    checkpoint,
    distinct_clips,
    finish_all,
    percentile,
    service,
    speech,
    submit_all,
    ts,
)
from emotionq.settings import DEFAULT_MODEL
from emotionq.store import open_store
from emotionq.web import keys

NAME = "waiting"
QUEUED, READS, FEW = 50, 400, 5
SCALE_NAME = "scale"
SCALE_WAITING, SCALE_CLIENTS, SCALE_THREADS, PROBES, ROUNDS = 20_000, 100, 8, 100, 4


def run(ctx: Context) -> list[Row]:
    work = ctx.workdir(NAME)
    backlog = 40 if ctx.quick else 200
    clips = distinct_clips(work / "clips", [1] * (QUEUED + 2 * (backlog + FEW)))
    for part in ("get", "fair", "fifo"):
        (work / part).mkdir(parents=True, exist_ok=True)
    with service(work / "get", checkpoint("tiny")) as svc:
        with_pos, without = _get_p50s(svc, submit_all(svc, clips[:QUEUED], threads=4), work / "get")
    rest = clips[QUEUED:]
    fair = _b_wait(work / "fair", rest[:backlog + FEW], backlog, own_client=True)
    fifo = _b_wait(work / "fifo", rest[backlog + FEW:], backlog, own_client=False)
    ctx.detail(NAME).update(get_p50_ms=with_pos, get_without_position_p50_ms=without, backlog=backlog,
                            b_wait_fair_s=fair, b_wait_fifo_s=fifo)
    return [
        Row(NAME, "GET of a queued job with queue.position p50", with_pos, "ms", without, "GET p50 without it",
            notes=f"{QUEUED} queued, {READS} reads each, two API processes on one store"),
        Row(NAME, f"B's mean wait, 5 jobs behind A's {backlog}, fair share", fair, "s", fifo,
            "the same with first in, first out (one client)", notes="tiny, 1 s clips, one worker"),
    ]


def _get_p50s(svc: Service, ids: list[str], work) -> tuple[float, float]:
    other = Service(env={**{k: v for k, v in svc.env.items() if k != "EMOTIONQ_PORT"},
                         "EMOTIONQ_QUEUE_POSITION": "false"}, workdir=work)
    other.procs = svc.procs  # stopped with the first
    other.spawn("api-without", "api")
    other.wait_until(lambda: httpx.get(f"{other.url}/healthz", timeout=1).status_code == 200, 60, "api-without")
    other.http.headers.update(svc.http.headers)
    assert svc.job(ids[-1])["queue"] and other.job(ids[-1])["queue"] is None
    times: dict[str, list[float]] = {"with": [], "without": []}
    for k in range(READS):
        for name, api in (("with", svc), ("without", other))[:: 1 if k % 2 else -1]:
            began = time.perf_counter()
            api.http.get(f"/v1/jobs/{ids[k % len(ids)]}").raise_for_status()
            times[name].append((time.perf_counter() - began) * 1e3)
    other.http.close()
    return percentile(times["with"], 50), percentile(times["without"], 50)


def _b_wait(work, clips, backlog: int, *, own_client: bool) -> float:
    with service(work, checkpoint("tiny"), EMOTIONQ_MAX_QUEUED_LOW="1000000") as svc:
        b = copy.copy(svc)
        if own_client:
            b.http = svc.as_client("client-b")
        svc.start_worker()
        submit_all(svc, clips[:backlog], threads=4)
        b_ids = submit_all(b, clips[backlog:])
        done = finish_all(b, b_ids)
    return statistics.mean(ts(j["started_at"]) - ts(j["created_at"]) for j in done)


def run_scale(ctx: Context) -> list[Row]:
    waiting = 2_000 if ctx.quick else SCALE_WAITING
    work = ctx.workdir(SCALE_NAME)
    for part in ("full", "empty"):
        (work / part).mkdir()
    clip = _clips()
    sent = iter(range(10**9))
    env = {"EMOTIONQ_MODEL": DEFAULT_MODEL, "EMOTIONQ_MAX_QUEUED_LOW": "1000000"}
    with (service(work / "full", checkpoint("tiny"), **env) as svc,
          service(work / "empty", checkpoint("tiny"), db=TWIN_REDIS_DB, **env) as twin):
        clients = _clients(svc, SCALE_CLIENTS)
        [twin_client] = _clients(twin, 1)
        url = svc.env["EMOTIONQ_STORE_URL"]
        for c in (clients[0], twin_client):
            _submit(c, clip, next(sent))  # warm
        memory = redis.Redis.from_url(url)
        before = memory.info("memory")["used_memory"]
        fill = waiting - 1
        began = time.perf_counter()
        with ThreadPoolExecutor(SCALE_THREADS) as pool:
            list(pool.map(lambda k: _submit(clients[k % SCALE_CLIENTS], clip, next(sent)), range(fill)))
        fill_s = time.perf_counter() - began
        per_job = (memory.info("memory")["used_memory"] - before) / fill
        full, empty = {"submit": [], "get": []}, {"submit": [], "get": []}
        for k in range(ROUNDS):  # alternating, the order flipped each round
            for client, into in ((clients[0], full), (twin_client, empty))[:: 1 if k % 2 == 0 else -1]:
                _probe(client, clip, sent, PROBES // ROUNDS, into)
        for c in (*clients, twin_client):
            c.close()
    p50 = {name: {side: percentile(times[side], 50) for side in ("submit", "get")}
           for name, times in (("full", full), ("empty", empty))}
    ctx.detail(SCALE_NAME).update(waiting=waiting + PROBES // 2, clients=SCALE_CLIENTS, bytes_per_waiting_job=per_job,
                                  fill_per_s=fill / fill_s, p50_ms=p50, rounds=ROUNDS)
    note = (f"{SCALE_CLIENTS} clients, 1 s clips, no worker; one client's {PROBES} submits and GETs, one at a "
            f"time, {ROUNDS} rounds alternating with an empty twin service")
    return [
        Row(SCALE_NAME, f"Redis bytes per waiting job at {waiting:,} waiting", per_job, "bytes",
            notes=f"used_memory growth over the {fill:,} uploads of the fill ({fill / fill_s:.0f}/s, "
                  f"{SCALE_THREADS} threads); goal <= 2,048; 2,813 before compact documents"),
        Row(SCALE_NAME, f"submit p50 at {waiting:,} waiting", p50["full"]["submit"], "ms", p50["empty"]["submit"],
            "submit p50, empty", notes=f"{note}; goal <= 1.2"),
        Row(SCALE_NAME, f"GET p50 (with queue.position) at {waiting:,} waiting", p50["full"]["get"], "ms",
            p50["empty"]["get"], "GET p50, empty", notes=f"{note}; goal <= 1.2"),
    ]


def _clients(svc: Service, n: int) -> list[httpx.Client]:
    """``n`` HTTP clients of ``svc``, each a client of its own (keys made in its store, not by n CLI runs)."""
    store = open_store(svc.env["EMOTIONQ_STORE_URL"])
    try:
        tokens = [keys.create(store, client=f"client-{k:03d}")[0] for k in range(n)]
    finally:
        store.close()
    return [httpx.Client(base_url=svc.url, timeout=120, headers={"Authorization": f"Bearer {t}"}) for t in tokens]


def _submit(client: httpx.Client, clip, k: int) -> tuple[str, float]:
    """Upload clip ``k``: the job id and how long the answer took (ms)."""
    began = time.perf_counter()
    r = client.post("/v1/jobs", files={"file": (f"call-{k:06d}.wav", clip(k), "audio/wav")})
    took = (time.perf_counter() - began) * 1e3
    if r.status_code != 202:
        raise RuntimeError(f"upload {k} answered {r.status_code}: {r.text[:300]}")
    return r.json()["id"], took


def _probe(client: httpx.Client, clip, sent, n: int, into: dict) -> None:
    """``n`` submits, then a GET of each of those jobs, one at a time; their times (ms) into ``into``."""
    made = [_submit(client, clip, next(sent)) for _ in range(n)]
    into["submit"] += [took for _, took in made]
    for job_id, _ in made:
        began = time.perf_counter()
        r = client.get(f"/v1/jobs/{job_id}")
        into["get"].append((time.perf_counter() - began) * 1e3)
        if r.json()["queue"]["position"] is None:
            raise RuntimeError(f"job {job_id} has no position: {r.text[:300]}")


def _clips():
    """Distinct 1 s WAVs, made in memory on demand: ``clip(k)`` differs from every other in its last samples."""
    data, rate = sf.read(speech(1), dtype="int16")

    def clip(k: int) -> bytes:
        samples = data.copy()
        samples[-8:] = np.random.default_rng(k).integers(-50, 50, size=8, dtype="int16")
        out = io.BytesIO()
        sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
        return out.getvalue()

    return clip
