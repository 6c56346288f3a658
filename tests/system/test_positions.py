"""Queue positions on the real RabbitMQ and Redis: what a queued job reports matches the order jobs
then start in, falls as jobs start, and counts only high jobs ahead of a high job."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from audio_factory import distinct_clips
from harness import fresh_redis_db, running

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(600)]

LOW, HIGH = 30, 2


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _positions(service, job_ids):
    return {j: (job["queue"] or {}).get("position") for j in job_ids
            if (job := service.job(j))["status"] == "queued"}


def test_positions_match_the_start_order_and_fall(tmp_path, tiny_model_dir, redis_url, speech_wav):
    clips = distinct_clips(speech_wav, tmp_path, LOW + HIGH)
    with running(tmp_path, model=tiny_model_dir, store=fresh_redis_db(10), worker=False,
                 batch_size=1) as service:  # a database of its own: no other test's waiting jobs take turns
        low = [service.submit(c, priority="low").json()["id"] for c in clips[:LOW]]
        assert list(_positions(service, low).values()) == list(range(LOW))
        high = [service.submit(c, priority="high").json()["id"] for c in clips[LOW:]]
        before = _positions(service, high + low)
        assert [before[j] for j in high] == list(range(HIGH))  # only the high jobs ahead of it count
        assert [before[j] for j in low] == list(range(HIGH, HIGH + LOW))

        service.start_worker()
        seen, etas = dict(before), []
        while seen:
            etas.append((service.job(low[-1])["queue"] or {}).get("eta_s"))
            now = _positions(service, list(seen))
            for j, p in now.items():
                assert p is None or p <= seen[j], f"{j} went from {seen[j]} to {p}"
            seen = {j: p for j, p in now.items() if p is not None}
            time.sleep(0.2)
        done = {j: service.finish(j) for j in high + low}
    assert {d["status"] for d in done.values()} == {"succeeded"}
    assert any(eta and eta > 0 for eta in etas), etas  # once runs were measured, with a worker live
    started = sorted(done, key=lambda j: _ts(done[j]["started_at"]))
    assert started == sorted(before, key=before.get)
