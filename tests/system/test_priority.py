"""Strict priority, on the real RabbitMQ and in embedded mode (whose file broker is first in, first out):
a high job starts before every low job not yet started. The store's backlogs decide the order."""

from __future__ import annotations

import concurrent.futures
import time
from datetime import datetime

import pytest

from audio_factory import distinct_clips
from harness import running

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(600)]

LOW, HIGH = 30, 3


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.fixture(params=["distributed", "embedded"])
def service(request, tmp_path, tiny_model_dir, redis_url):
    where = {"store": redis_url} if request.param == "distributed" else {"broker": "", "store": ""}
    with running(tmp_path, model=tiny_model_dir, worker=False, **where) as svc:  # each test starts it
        yield svc


def _submit_all(service, clips, priority):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda c: service.submit(c, priority=priority), clips))
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    return [r.json()["id"] for r in responses]


def test_backlog_queued_before_the_worker_starts(service, speech_wav, tmp_path):
    clips = distinct_clips(speech_wav, tmp_path, LOW + HIGH)
    low = _submit_all(service, clips[:LOW], "low")
    high = _submit_all(service, clips[LOW:], "high")
    service.start_worker()
    done = {j: service.finish(j) for j in low + high}
    assert {d["status"] for d in done.values()} == {"succeeded"}
    order = sorted(done, key=lambda j: _ts(done[j]["started_at"]))
    assert set(order[:HIGH]) == set(high), [done[j]["priority"] for j in order]


def test_high_jobs_overtake_a_running_backlog(service, speech_wav, tmp_path):
    service.start_worker()
    clips = distinct_clips(speech_wav, tmp_path, LOW + HIGH)
    low = _submit_all(service, clips[:LOW], "low")
    high = _submit_all(service, clips[LOW:], "high")
    all_high_queued = time.time()  # every high job's message is confirmed by RabbitMQ by now
    done = {j: service.finish(j) for j in low + high}
    assert {d["status"] for d in done.values()} == {"succeeded"}
    last_high_started = max(_ts(done[j]["started_at"]) for j in high)
    waiting_lows = [j for j in low if _ts(done[j]["started_at"]) > all_high_queued]
    assert waiting_lows, "the backlog drained before the high jobs arrived; make the low jobs slower"
    overtaken = [j for j in waiting_lows if _ts(done[j]["started_at"]) < last_high_started]
    assert overtaken == [], f"{len(overtaken)} waiting low jobs started before a high one"
