"""Flower, started by `emotionq flower`, watching the real worker on the real RabbitMQ.

- Basic auth is on: 401 without credentials or with wrong ones, 200 with them;
  without EMOTIONQ_FLOWER_AUTH the command refuses to start.
- A job's task shows in Flower's /api/tasks under its readable name, with the run id,
  job id, audio hash, duration and priority as arguments, and nothing else (no audio).
- Queue lengths (/api/queues/length) come from RabbitMQ's management API.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time

import httpx
import pytest

from audio_factory import distinct_clips
from harness import ROOT, free_port, running

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(300)]

AUTH = ("ops", "correct-horse")


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir, redis_url):
    with running(tmp_path_factory.mktemp("flower"), model=tiny_model_dir, store=redis_url,
                 flower_port=free_port(), flower_auth=":".join(AUTH)) as svc:
        yield svc


@pytest.fixture(scope="module")
def flower(service):
    """The URL of a real Flower process started by `emotionq flower`, answering."""
    url = f"http://127.0.0.1:{service.env['EMOTIONQ_FLOWER_PORT']}"
    service.spawn("flower", "flower")
    service.wait_until(lambda: httpx.get(f"{url}/api/workers", auth=AUTH, timeout=5).status_code == 200, 60,
                       "flower")
    yield url
    service.stop("flower", timeout=30)


def test_flower_refuses_to_start_without_credentials(service):
    env = {**service.env, "EMOTIONQ_FLOWER_AUTH": ""}
    out = subprocess.run([sys.executable, "-m", "emotionq.cli", "flower"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "EMOTIONQ_FLOWER_AUTH=user:password" in out.stderr, out.stderr


def test_basic_auth_guards_the_ui_and_the_api(flower):
    for path in ("/", "/api/workers", "/api/tasks", "/api/queues/length"):
        assert httpx.get(flower + path).status_code == 401, path
        assert httpx.get(flower + path, auth=(AUTH[0], "wrong")).status_code == 401, path
    assert httpx.get(flower + "/api/workers", auth=AUTH).status_code == 200


def test_a_job_shows_as_a_named_task_with_ids_and_no_audio(service, flower, speech_wav, tmp_path):
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    job = service.finish(service.submit(clip, priority="high").json()["id"])
    assert job["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while True:
        tasks = httpx.get(f"{flower}/api/tasks", params={"taskname": "emotionq.infer"}, auth=AUTH).json()
        [task] = [t for t in tasks.values() if job["id"] in (t.get("kwargs") or "")] or [None]
        if task and task["state"] == "SUCCESS" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert task is not None, tasks
    assert task["name"] == "emotionq.infer" and task["state"] == "SUCCESS", task
    assert task["worker"].startswith("emotionq-cpu@")
    assert ast.literal_eval(task["args"]) == [job["dedup"]["run_id"]]
    assert ast.literal_eval(task["kwargs"]) == {  # exactly these: the audio travels by hash, never by value
        "job_id": job["id"], "sha256": job["input"]["sha256"], "duration_s": job["input"]["duration_s"],
        "priority": "high"}


def test_queue_lengths_come_from_rabbitmq(service, flower, speech_wav, tmp_path):
    worker = f"emotionq-cpu@{os.uname().nodename}"
    assert "no longer consuming" in service.celery("control", "cancel_consumer", "emotion", "-d", worker).stdout
    try:
        ids = [service.submit(c).json()["id"] for c in distinct_clips(speech_wav, tmp_path, 2)]
        deadline = time.monotonic() + 30  # the management API refreshes its figures every 5 s
        while True:
            r = httpx.get(f"{flower}/api/queues/length", auth=AUTH)
            assert r.status_code == 200, r.text
            lengths = {q["name"]: q["messages"] for q in r.json()["active_queues"]}
            if lengths.get("emotion") == 2 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert lengths["emotion"] == 2 and lengths["webhooks"] == 0, lengths
    finally:
        assert "add consumer" in service.celery("control", "add_consumer", "emotion", "-d", worker).stdout
    assert {service.finish(j)["status"] for j in ids} == {"succeeded"}
