"""The celery admin commands of docs/operating/monitoring.md, each run against the real worker, with its
effect checked.

inspect registered/stats/active/reserved, control rate_limit, draining a worker with
cancel_consumer and resuming it with add_consumer, `emotionq purge --priority low`
(only low jobs leave the shared priority queue, and they end failed with a code), and
control shutdown (the worker exits). The module's tests run in order on one service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from audio_factory import distinct_clips
from harness import ROOT, running

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir, redis_url):
    with running(tmp_path_factory.mktemp("celery-cli"), model=tiny_model_dir, store=redis_url) as svc:
        yield svc


def wait_status(service, job_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (job := service.job(job_id))["status"] != status:
        assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
        time.sleep(0.02)
    return job


def test_inspect_registered_and_stats(service):
    assert {"emotionq.infer", "emotionq.deliver_webhook"} <= set(service.inspect("registered"))
    stats = service.inspect("stats")
    assert stats["pool"]["max-concurrency"] == 1 and stats["prefetch_count"] == 1, stats


def test_inspect_active_shows_the_running_job_and_nothing_waits_in_the_worker(service, speech_wav, tmp_path):
    speech, rate = sf.read(speech_wav, dtype="float32")
    long_clip = tmp_path / "long.wav"  # 30 s: it runs for seconds, long enough to be caught running
    sf.write(long_clip, np.tile(speech, 10) + np.random.default_rng().normal(0, 1e-4, len(speech) * 10)
             .astype("float32"), rate)
    running = service.submit(long_clip).json()["id"]
    wait_status(service, running, "running")
    _, child = service.inference_worker_pids()
    os.kill(child, signal.SIGSTOP)  # hold it mid-job while we look
    try:
        [waiting] = distinct_clips(speech_wav, tmp_path, 1)
        waiting = service.submit(waiting).json()["id"]
        [active] = service.inspect("active")
        assert active["name"] == "emotionq.infer" and active["kwargs"]["job_id"] == running, active
        assert service.inspect("reserved") == []  # prefetch 1: the next job waits in RabbitMQ, not here
        assert service.job(waiting)["status"] == "queued"
    finally:
        os.kill(child, signal.SIGCONT)
    assert service.finish(running)["status"] == "succeeded" and service.finish(waiting)["status"] == "succeeded"


def test_rate_limit(service):
    assert "new rate limit set successfully" in service.control("rate_limit", "emotionq.infer", "30/m")
    assert "emotionq.infer [rate_limit=30/m]" in service.inspect("registered")
    assert "new rate limit set successfully" in service.control("rate_limit", "emotionq.infer", "0")
    assert "emotionq.infer [rate_limit=0]" in service.inspect("registered")  # 0: no limit


def test_drain_purge_low_and_resume(service, speech_wav, tmp_path):
    assert "no longer consuming from emotion" in service.control("cancel_consumer", "emotion")
    assert [q["name"] for q in service.inspect("active_queues")] == []
    clips = distinct_clips(speech_wav, tmp_path, 6)
    low = [service.submit(c, priority="low").json()["id"] for c in clips[:3]]
    high = [service.submit(c, priority="high").json()["id"] for c in clips[3:5]]
    raised = [service.submit(clips[5], priority="low").json()["id"]]  # then joined at high: its run is high now
    raised.append(service.submit(clips[5], priority="high").json()["id"])
    time.sleep(3)
    assert {service.job(j)["status"] for j in low + high + raised} == {"queued"}  # drained: nothing runs

    out = subprocess.run([sys.executable, "-m", "emotionq.cli", "purge", "--priority", "low"], cwd=ROOT,
                         env=service.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "purged 3 low-priority runs" in out.stdout, out.stdout
    for job_id in low:
        job = service.job(job_id)
        assert job["status"] == "failed" and job["error"]["code"] == "purged", job
    assert {service.job(j)["status"] for j in high + raised} == {"queued"}

    assert "add consumer emotion" in service.control("add_consumer", "emotion")
    assert [q["name"] for q in service.inspect("active_queues")] == ["emotion"]
    assert {service.finish(j)["status"] for j in high + raised} == {"succeeded"}
    assert {service.job(j)["error"]["code"] for j in low} == {"purged"}  # their messages are gone: nothing ran them


def test_shutdown_stops_the_worker(service):
    proc = service.procs["worker"]
    assert "Got shutdown from remote" not in service.log("worker")
    service.celery("control", "shutdown", "--timeout", "1", "-d", service.worker_name)  # it stops without a reply
    # `emotionq worker` exits when its Celery worker does, non-zero so that a process manager restarts it
    assert proc.wait(timeout=60) == 1
    assert "Got shutdown from remote" in service.log("worker")
    assert "worker[cpu] exited with 0; stopping the rest" in service.log("worker")
