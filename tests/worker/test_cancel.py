"""Cancelling a running job, against the real RabbitMQ, Redis and funasr: the worker stops its run
between forward passes when no job wants it any more, records it canceled and takes the next job;
a run that an identical job still wants keeps running."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import redis

from audio_factory import distinct_clips
from harness import fresh_redis_db, running, stored_run

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(300)]

WINDOW_S = 3  # a window is one forward pass: well under a second for the tiny model
LONG_S = 60


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir):
    store = fresh_redis_db(7)
    with running(tmp_path_factory.mktemp("cancel"), model=tiny_model_dir, store=store, window_seconds=WINDOW_S,
                 batch_size=1) as svc:
        svc.store = redis.Redis.from_url(store)
        yield svc


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory):
    from audio_factory import make_speech

    return make_speech(tmp_path_factory.mktemp("long") / "long.wav", seconds=LONG_S, rate=16000)


def _dir(path):
    path.mkdir()
    return path


def _run(service, job: dict):
    return stored_run(service.store, job["dedup"]["run_id"])


def _running(service, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (job := service.job(job_id))["status"] != "running":
        assert time.monotonic() < deadline and job["status"] == "queued", job
        time.sleep(0.05)
    return job


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_cancel_stops_the_run_and_frees_the_worker(service, long_speech, speech_wav, tmp_path):
    [long, short] = (distinct_clips(source, _dir(tmp_path / name), 1)[0]
                     for name, source in (("long", long_speech), ("short", speech_wav)))
    long_id = service.submit(long).json()["id"]
    job = _running(service, long_id)
    next_id = service.submit(short).json()["id"]  # waits behind the long job
    time.sleep(1.0)
    canceled_at = time.time()
    assert service.http.post(f"/v1/jobs/{long_id}/cancel").json()["status"] == "canceled"

    nxt = service.finish(next_id)
    assert nxt["status"] == "succeeded"
    waited = _at(nxt["started_at"]) - canceled_at
    run = _run(service, job)
    assert run.state == "canceled" and run.output is None, run
    assert run.finished_at - canceled_at < 3, "the run went on after its only job was canceled"
    assert waited < 5, f"the next job waited {waited:.1f} s after the cancel"
    assert service.job(long_id)["status"] == "canceled"


def test_a_run_another_job_still_wants_keeps_running(service, long_speech, tmp_path):
    [clip] = distinct_clips(long_speech, tmp_path, 1)
    first, second = (service.submit(clip).json()["id"] for _ in range(2))
    job = _running(service, first)
    time.sleep(0.5)
    service.http.post(f"/v1/jobs/{first}/cancel")
    done = service.finish(second, timeout=180)
    assert done["status"] == "succeeded" and done["output"]["duration_s"] == pytest.approx(LONG_S, abs=0.1)
    assert _run(service, job).state == "succeeded"
    assert service.job(first)["status"] == "canceled"
