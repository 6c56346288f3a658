"""Overload: past the configured depth per priority the API answers 429 with Retry-After, and
everything it did accept still finishes (real API, RabbitMQ, Redis and worker)."""

from __future__ import annotations

import pytest

from audio_factory import distinct_clips
from harness import fresh_redis_db, running

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(600)]

MAX_LOW, MAX_HIGH = 4, 2


@pytest.fixture
def service(tmp_path, tiny_model_dir):
    with running(tmp_path, model=tiny_model_dir, store=fresh_redis_db(11), worker=False,  # the queue only fills
                 max_queued_low=MAX_LOW, max_queued_high=MAX_HIGH) as svc:
        yield svc


def test_full_queues_answer_429_and_accepted_jobs_finish(service, speech_wav, tmp_path):
    clips = iter(distinct_clips(speech_wav, tmp_path, 12))
    low = [service.submit(next(clips)) for _ in range(MAX_LOW + 2)]
    high = [service.submit(next(clips), priority="high") for _ in range(MAX_HIGH + 1)]
    joined = service.submit(tmp_path / "clip-000.wav")  # the same audio as an accepted job: no new work

    assert [r.status_code for r in low] == [202] * MAX_LOW + [429] * 2
    assert [r.status_code for r in high] == [202] * MAX_HIGH + [429]
    assert joined.status_code == 202 and joined.json()["dedup"]["source"] == "coalesced"
    for r in low[MAX_LOW:] + high[MAX_HIGH:]:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "queue_full" and r.json()["retryable"] is True
        assert int(r.headers["retry-after"]) > 0

    service.start_worker()
    accepted = [r.json()["id"] for r in low + high + [joined] if r.status_code == 202]
    outcomes = [service.finish(job_id)["status"] for job_id in accepted]
    submitted, refused = len(low) + len(high) + 1, 3
    assert (submitted, len(accepted), outcomes.count("succeeded"), refused) == (10, 7, 7, 3)
    assert service.submit(next(clips)).status_code == 202  # the queue has room again
