"""Workers killed or hung in the middle of a job, against the real RabbitMQ, Redis and funasr.

- SIGKILL of the worker's child mid-inference: Celery rejects the message back to
  RabbitMQ, the replacement child finishes the job: one result, one webhook.
- SIGKILL of the whole worker (main process and child): RabbitMQ requeues the
  unacked message when the connection drops; a new worker finishes the job.
- A job that kills its worker every time is failed ``worker_lost`` after
  ``EMOTIONQ_MAX_DELIVERIES`` deliveries, not redelivered for ever.
- A child that hangs (SIGSTOP, like a stuck kernel) is killed at the hard time
  limit; the job fails ``time_limit`` and a new child reloads the model and goes on.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from audio_factory import distinct_clips
from harness import running, stored_run
from webhook_receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(600)]

MAX_DELIVERIES = 2
SOFT_LIMIT_S, GRACE_S = 12, 2  # a 12 s clip scores in 1-4 s here; only a hung child reaches the limits


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir, redis_url):
    with running(tmp_path_factory.mktemp("worker-faults"), model=tiny_model_dir, store=redis_url,
                 max_deliveries=MAX_DELIVERIES, soft_time_limit_base=SOFT_LIMIT_S, soft_time_limit_per_audio_second=0,
                 hard_time_limit_grace=GRACE_S, webhook_allow_networks="127.0.0.0/8") as svc:
        yield svc


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory):
    """12 s of speech: long enough that a test sees the job running and kills it mid-inference."""
    from audio_factory import make_speech

    return make_speech(tmp_path_factory.mktemp("long") / "long.wav", seconds=12.0, rate=16000)


@pytest.fixture
def clips(long_speech, tmp_path):
    return iter(distinct_clips(long_speech, tmp_path, 3))


def _child_pid(service, *, other_than: int | None = None, timeout: float = 120) -> int:
    """The pid of the worker process that holds the model, once it has announced itself ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, child = service.inference_worker_pids()
        except (AssertionError, ValueError):  # between a process's death and its replacement
            child = None
        if child not in (None, other_than) and child in {w["pid"] for w in service.wait_ready()["workers"].values()}:
            return child
        time.sleep(0.1)
    raise AssertionError(f"no worker process other than {other_than} announced itself ready")


def _run(redis_url: str, job: dict):
    return stored_run(redis.Redis.from_url(redis_url), job["dedup"]["run_id"])


def _when_running(service, redis_url: str, job_id: str, delivery: int = 1, timeout: float = 120) -> None:
    """Return as soon as delivery number ``delivery`` of the job is running (polled from the store)."""
    client = redis.Redis.from_url(redis_url)
    run_id = service.job(job_id)["dedup"]["run_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = stored_run(client, run_id)
        if run.state == "running" and run.deliveries == delivery:
            return
        assert run.state in ("queued", "running"), run
        time.sleep(0.01)
    raise AssertionError(f"delivery {delivery} of {job_id} never ran")


def _events(receiver: Receiver, name: str) -> list[str]:
    return [Receiver.payload(r)["type"] for r in receiver.received(name)]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_child_killed_mid_inference_finishes_the_job_exactly_once(service, redis_url, receiver, clips):
    child = _child_pid(service)
    r = service.submit(next(clips), webhook_url=receiver.url("child"), webhook_events="job.started")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    _when_running(service, redis_url, job_id)
    os.kill(child, signal.SIGKILL)

    job = service.finish(job_id)
    assert job["status"] == "succeeded", job
    assert _run(redis_url, job).deliveries == 2  # the same message, redelivered once
    assert _child_pid(service, other_than=child) != child
    receiver.wait("child", 2)
    time.sleep(2)  # room for a duplicate to arrive, if one were sent
    assert sorted(_events(receiver, "child")) == ["job.started", "job.succeeded"]
    ids = {r["headers"]["webhook-id"] for r in receiver.received("child")}
    assert len(ids) == 2


def test_whole_worker_killed_mid_inference_is_finished_by_the_next_worker(service, redis_url, receiver, clips):
    main, child = service.inference_worker_pids()
    r = service.submit(next(clips), webhook_url=receiver.url("whole"))
    job_id = r.json()["id"]
    _when_running(service, redis_url, job_id)
    for pid in (main, child):
        os.kill(pid, signal.SIGKILL)
    assert service.procs["worker"].wait(timeout=60) != 0  # the launcher noticed and stopped the rest
    service.stop("worker")

    service.start_worker()
    job = service.finish(job_id)
    assert job["status"] == "succeeded", job
    assert _run(redis_url, job).deliveries == 2
    receiver.wait("whole", 1)
    time.sleep(2)
    assert _events(receiver, "whole") == ["job.succeeded"]


def test_a_job_that_kills_every_worker_is_failed_after_the_delivery_cap(service, redis_url, receiver, clips):
    r = service.submit(next(clips), webhook_url=receiver.url("poison"))
    job_id = r.json()["id"]
    for delivery in range(1, MAX_DELIVERIES + 1):
        _when_running(service, redis_url, job_id, delivery=delivery)
        os.kill(_child_pid(service), signal.SIGKILL)

    job = service.finish(job_id)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "worker_lost" and job["error"]["retryable"] is False
    assert f"{MAX_DELIVERIES} times" in job["error"]["message"]
    assert _run(redis_url, job).deliveries == MAX_DELIVERIES + 1  # the last delivery was refused, not run
    receiver.wait("poison", 1)
    assert _events(receiver, "poison") == ["job.failed"]
    assert service.submit(next(clips), headers={"Prefer": "wait=60"}).json()["status"] == "succeeded"


def test_a_hung_child_is_killed_at_the_hard_limit_and_replaced(service, redis_url, long_speech, tmp_path):
    [hang, after] = distinct_clips(long_speech, tmp_path, 2)
    child = _child_pid(service)
    job_id = service.submit(hang).json()["id"]
    _when_running(service, redis_url, job_id)
    os.kill(child, signal.SIGSTOP)  # hangs like a stuck CUDA kernel: even the soft limit cannot interrupt it
    started = time.monotonic()

    job = service.finish(job_id, timeout=SOFT_LIMIT_S + GRACE_S + 60)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "time_limit" and "hard time limit" in job["error"]["message"]
    assert time.monotonic() - started < SOFT_LIMIT_S + GRACE_S + 10
    new_child = _child_pid(service, other_than=child)
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child)
    assert _run(redis_url, job).deliveries == 1  # not redelivered: a time limit is final

    done = service.finish(service.submit(after).json()["id"])
    assert done["status"] == "succeeded", done
    assert _child_pid(service) == new_child
