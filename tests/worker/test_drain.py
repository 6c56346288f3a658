"""Draining a worker as Kubernetes and process managers stop it (SIGTERM to `emotionq worker`), on the
real RabbitMQ, Redis and funasr: the job in hand finishes and is not redelivered, no new job is taken,
and the process exits; a second SIGTERM, or the end of the drain time, sends the job back to the queue
(redelivered and finished by the next worker, not lost)."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from audio_factory import distinct_clips, make_speech
from harness import fresh_redis_db, running, stored_run

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(300)]

WINDOW_S = 3
LONG_S = 60  # about 5 s of work for the tiny model, in 3 s windows


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir):
    store = fresh_redis_db(5)
    with running(tmp_path_factory.mktemp("drain"), model=tiny_model_dir, store=store, worker=False,
                 window_seconds=WINDOW_S, batch_size=1) as svc:
        svc.store = redis.Redis.from_url(store)
        yield svc


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory):
    return make_speech(tmp_path_factory.mktemp("long") / "long.wav", seconds=LONG_S, rate=16000)


def _clip(source, directory):
    directory.mkdir(exist_ok=True)
    return distinct_clips(source, directory, 1)[0]


def _running(service, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (status := service.job(job_id)["status"]) != "running":
        assert time.monotonic() < deadline and status == "queued", status
        time.sleep(0.05)
    time.sleep(0.5)  # into its forward passes


def _run(service, job_id: str):
    return stored_run(service.store, service.job(job_id)["dedup"]["run_id"])


def _exit_within(service, seconds: float) -> int:
    proc = service.procs.pop("worker")
    return proc.wait(timeout=seconds)


def test_sigterm_finishes_the_job_in_hand_and_takes_no_new_one(service, long_speech, speech_wav, tmp_path):
    long_id = service.submit(_clip(long_speech, tmp_path / "long")).json()["id"]
    service.start_worker()
    _running(service, long_id)
    next_id = service.submit(_clip(speech_wav, tmp_path / "short")).json()["id"]
    service.procs["worker"].send_signal(signal.SIGTERM)

    assert _exit_within(service, 120) == 0
    assert service.job(long_id)["status"] == "succeeded"
    assert _run(service, long_id).deliveries == 1  # finished in the drain, acked: not redelivered
    assert service.job(next_id)["status"] == "queued"  # the draining worker took no new job
    assert "draining: workers finish the jobs in hand" in service.log("worker")

    service.start_worker()
    assert service.finish(next_id)["status"] == "succeeded"
    service.stop("worker")


@pytest.mark.parametrize("how", ["second SIGTERM", "drain time out"])
def test_stopping_now_returns_the_job_in_hand_to_the_queue(service, long_speech, tmp_path, how):
    job_id = service.submit(_clip(long_speech, tmp_path / "long")).json()["id"]
    service.env["EMOTIONQ_DRAIN_TIMEOUT_S"] = "1" if how == "drain time out" else "600"
    try:
        service.start_worker()
    finally:
        del service.env["EMOTIONQ_DRAIN_TIMEOUT_S"]
    _running(service, job_id)
    supervisor = service.procs["worker"]
    supervisor.send_signal(signal.SIGTERM)
    if how == "second SIGTERM":
        time.sleep(0.5)
        supervisor.send_signal(signal.SIGTERM)
    _exit_within(service, 30)  # long before the job in hand could have finished
    assert service.job(job_id)["status"] != "succeeded", "the job finished: stopping did not cut it short"

    service.start_worker()
    done = service.finish(job_id, timeout=180)
    assert done["status"] == "succeeded" and done["output"]["duration_s"] == pytest.approx(LONG_S, abs=0.1)
    assert _run(service, job_id).deliveries == 2  # redelivered once, by the broker
    service.stop("worker")
