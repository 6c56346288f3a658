"""The broker or the store crashes and comes back while clients keep submitting: nothing accepted is lost.

Each test runs the real API and worker against a private server of its own
(tests/servers.py) that it SIGKILLs mid-load and restarts on the same port and
data. Every submission must end one of two ways: 202 and later succeeded, or
503 with Retry-After. The counts are asserted exactly.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import pytest
import redis

from audio_factory import distinct_clips, make_speech
from harness import Service, fresh_redis_db, rabbitmq_vhost
from servers import PrivateRabbitMQ, PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(600)]

SUBMITTERS = 3
PAUSE_S = 0.4  # per submitter: about 7 uploads a second in all
DOWN_S = 3.0
ACCEPTED_BEFORE_FAULT = 15  # by then a backlog waits in the queue: the crash must not lose it


@dataclass
class Tally:
    accepted: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # 503s: code and Retry-After
    unexpected: list[str] = field(default_factory=list)
    accepted_after_fault: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def submitted(self) -> int:
        return len(self.accepted) + len(self.rejected) + len(self.unexpected)


def _submit_through(service: Service, clips: list, fault) -> Tally:
    """Submit ``clips`` from several threads; run ``fault()`` once some are in, stop soon after it."""
    tally, pending, stop, faulted = Tally(), iter(clips), threading.Event(), threading.Event()
    next_clip = threading.Lock()

    def submitter() -> None:
        while not stop.is_set():
            with next_clip:
                clip = next(pending, None)
            if clip is None:
                return
            try:
                r = service.submit(clip)
            except Exception as exc:  # a hang or a dropped connection counts against the service
                with tally.lock:
                    tally.unexpected.append(f"{type(exc).__name__}: {exc}")
                continue
            with tally.lock:
                if r.status_code == 202:
                    tally.accepted.append(r.json()["id"])
                    tally.accepted_after_fault += faulted.is_set()
                elif r.status_code == 503 and r.headers.get("retry-after"):
                    tally.rejected.append({"code": r.json()["code"], "retry_after": r.headers["retry-after"]})
                else:
                    tally.unexpected.append(f"{r.status_code}: {r.text}")
            time.sleep(PAUSE_S)

    threads = [threading.Thread(target=submitter) for _ in range(SUBMITTERS)]
    for t in threads:
        t.start()
    _until(lambda: len(tally.accepted) >= ACCEPTED_BEFORE_FAULT, "too few uploads accepted before the fault")
    fault()
    faulted.set()
    _until(lambda: tally.accepted_after_fault >= 5, "no upload accepted after the restart")
    stop.set()
    for t in threads:
        t.join(timeout=120)
    return tally


def _until(condition, message: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _outcomes(service: Service, job_ids: list[str]) -> dict[str, int]:
    counts = {"succeeded": 0, "failed": 0, "lost": 0}
    for job_id in job_ids:
        job = service.finish(job_id, timeout=180)
        counts[job["status"] if job["status"] in counts else "lost"] += 1
    return counts


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Enough distinct recordings for a minute of submissions, each long enough that a backlog builds."""
    tmp = tmp_path_factory.mktemp("restart-clips")
    return distinct_clips(make_speech(tmp / "speech.wav", seconds=3.0), tmp, 300)


def _service(tmp, model_dir, *, broker: str, store: str, **settings) -> Service:
    svc = Service.distributed(tmp, broker=broker, store=store, model=model_dir, **settings)
    svc.start_api()
    svc.start_worker()
    return svc


def _crash_under_load(service: Service, clips: list, measure_backlog, restart) -> tuple[int, Tally, dict]:
    """Submit through a crash; returns (backlog when it crashed, the tally, the accepted jobs' outcomes)."""
    backlog = []

    def crash() -> None:
        backlog.append(measure_backlog())
        restart()

    try:
        tally = _submit_through(service, clips, crash)
        outcomes = _outcomes(service, tally.accepted)
    finally:
        service.stop_all()
    return backlog[0], tally, outcomes


def _assert_nothing_lost(what: str, backlog: int, tally: Tally, outcomes: dict, code: str) -> None:
    print(f"\n{what} crash with {backlog} jobs queued: {tally.submitted} submitted, {len(tally.accepted)} "
          f"accepted, {len(tally.rejected)} refused with 503, outcomes {outcomes}")
    assert backlog > 0, "nothing was queued when it crashed"
    assert tally.unexpected == []
    assert tally.rejected, "no upload met the outage"
    assert {r["code"] for r in tally.rejected} == {code}
    assert tally.submitted == len(tally.accepted) + len(tally.rejected)
    assert outcomes == {"succeeded": len(tally.accepted), "failed": 0, "lost": 0}


def test_broker_crash_loses_no_accepted_job(tmp_path, tiny_model_dir, clips):
    """Every run goes to RabbitMQ as it is accepted (no cap on dispatching ahead), so the crash meets a
    queue full of messages, and every upload during the outage meets the broker: with the default cap
    (live workers x batch size) the runs past it wait in the store, where uploads are accepted (202)
    without a publish, and whether any upload met the outage was down to timing."""
    with PrivateRabbitMQ(tmp_path) as rabbit:
        service = _service(tmp_path, tiny_model_dir, broker=rabbit.url, store=fresh_redis_db(12),
                           dispatch_ahead=10_000)
        result = _crash_under_load(service, clips, lambda: rabbit.queue_depth("emotion"),
                                   lambda: rabbit.restart(kill=True, down_s=DOWN_S))
    _assert_nothing_lost("broker", *result, code="broker_unavailable")


def test_durable_store_crash_loses_no_accepted_job(tmp_path, tiny_model_dir, clips):
    with PrivateRedis(tmp_path, aof=True) as store, rabbitmq_vhost() as broker:
        service = _service(tmp_path, tiny_model_dir, broker=broker, store=store.url)
        result = _crash_under_load(
            service, clips, lambda: json.loads(redis.Redis.from_url(store.url).get("emotionq:depth"))["low"],
            lambda: store.restart(kill=True, down_s=DOWN_S))
    _assert_nothing_lost("store", *result, code="store_unavailable")
