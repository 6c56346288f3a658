"""`emotionq janitor` as a process on the real servers (Redis, RabbitMQ, SeaweedFS), SIGKILLed in the
middle of collecting audio and started again: nothing still referenced is deleted, everything
unreferenced is, and each expired lease is failed once, with one webhook delivery per job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import harness
from emotionq import jobs
from emotionq.blobs import name, open_blobs
from emotionq.janitor import lock
from emotionq.store import open_store
from emotionq.webhooks import delivery
from harness import ROOT, fresh_redis_db, rabbitmq_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.s3, pytest.mark.timeout(300)]

UNUSED, USED, LOST = 150, 10, 5
HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["job.failed", "job.succeeded"]}


def _submit(store, blobs, settings, data: bytes, *, webhook=None):
    writer = blobs.writer(max_bytes=10**6)
    writer.write(data)
    writer.close()
    sub = jobs.submit(store, settings=settings, client="c", priority="low", metadata={}, model="m", webhook=webhook,
                      options={"granularity": "utterance", "embedding": False},
                      input={"filename": None, "content_type": None, "bytes": len(data), "duration_s": 1.0,
                             "sha256": writer.sha256})
    writer.commit(sub.run.blob)
    writer.abort()
    return sub


def _janitor(env: dict, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "emotionq.cli", "janitor"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_a_janitor_killed_mid_sweep_and_restarted_deletes_only_the_unreferenced(seaweed, tmp_path):
    with rabbitmq_vhost() as broker:
        values = dict(broker_url=broker, store_url=fresh_redis_db(4), var_dir=tmp_path / "var", blob_retention_s=0,
                      **seaweed.settings(prefix="gc/"))
        settings = harness.settings(**values)
        store, blobs = open_store(settings.store_url), open_blobs(settings)
        unused = [_submit(store, blobs, settings, os.urandom(2000)) for _ in range(UNUSED)]
        for sub in unused:
            jobs.fail(store, run_id=sub.run.id, error={"code": "x", "message": "x", "retryable": False})
        used = [_submit(store, blobs, settings, os.urandom(2000)) for _ in range(USED)]  # queued: needed
        lost = [_submit(store, blobs, settings, os.urandom(2000), webhook=HOOK) for _ in range(LOST)]
        for sub in lost:  # claimed by a worker that vanished long ago
            jobs.claim(store, run_id=sub.run.id, task_id="t", worker="w@gone", max_deliveries=3,
                       hard_limit_s=-1000)
        keep = {name(s.run.sha256, s.run.blob) for s in used + lost}
        assert len(seaweed.keys(prefix="gc/")) == UNUSED + USED + LOST

        env = {**os.environ, **{f"EMOTIONQ_{k.upper()}": str(v) for k, v in values.items()},
               "EMOTIONQ_JANITOR_INTERVAL_S": "0.3", "EMOTIONQ_JANITOR_BATCH": "10"}
        with open(tmp_path / "janitor.log", "ab") as log:
            first = _janitor(env, log)
            _until(lambda: len(seaweed.keys(prefix="gc/")) <= UNUSED + USED + LOST - 20, "the janitor deleted nothing")
            os.killpg(first.pid, signal.SIGKILL)  # mid-sweep: it deletes 10 a sweep, every 0.3 s
            first.wait()
            left = len(seaweed.keys(prefix="gc/"))
            assert left > USED + LOST, "it was killed after it had finished"
            failed = {s.run.id: store.get(f"run:{s.run.id}") for s in lost}
            second = _janitor(env, log)  # it waits for the dead one's lease to lapse, then takes over
            try:
                _until(lambda: len(seaweed.keys(prefix="gc/")) == USED + LOST, "the new janitor did not finish")
                assert lock.holder(store) is not None
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(timeout=30) == 0
        print(f"\nkilled with {left - USED - LOST} of {UNUSED} unreferenced blobs left; the next janitor finished")
        assert set(k.removeprefix("gc/") for k in seaweed.keys(prefix="gc/")) == keep  # nothing referenced went
        for sub in lost:
            run = store.get(f"run:{sub.run.id}")
            assert run["state"] == "failed" and run["error"]["code"] == "worker_lost"
            assert run["finished_at"] == failed[sub.run.id]["finished_at"]  # failed once, by the first janitor
            record = store.get(delivery.key(sub.job.id, "job.failed"))
            assert record is not None and record["state"] == "pending"  # one delivery, queued (no webhook worker)
        assert lock.holder(store) is None  # released on SIGTERM
        store.close()


def _until(condition, message: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
