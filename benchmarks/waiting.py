"""Waiting: what the queue position costs a GET, and what fair share gives a small client.

Tiny checkpoint, 1 s clips, batching off, one worker.

- GET cost: 50 jobs queued (no worker), each read in turn through two API processes on the same store,
  one with positions (EMOTIONQ_QUEUE_POSITION on: two documents and a rank per read) and one without
  (the GET as before positions); p50 of each, alternating so both see the same load.
- Fair share: with the worker running, client A queues a backlog of low jobs, then client B queues 5;
  B's mean wait (started_at - created_at) with B as a client of its own (turns) against the same
  backlog with B's jobs sent by A (one client: first in, first out).
"""

from __future__ import annotations

import copy
import statistics
import time

import httpx

from benchmarks.common import (
    Context,
    Row,
    Service,
    checkpoint,
    distinct_clips,
    finish_all,
    percentile,
    service,
    submit_all,
    ts,
)

NAME = "waiting"
QUEUED, READS, FEW = 50, 400, 5


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
