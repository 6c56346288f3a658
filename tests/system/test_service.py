"""The whole service, end to end, as real processes: upload -> broker -> worker -> funasr -> result.

Runs in both modes: distributed (the machine's RabbitMQ and Redis) and embedded
(no servers: file broker and SQLite under a temporary directory).
"""

from __future__ import annotations

import concurrent.futures
import math

import httpx
import pytest

from emotionq.inference.labels import LABELS
from harness import running

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", params=["distributed", "embedded"])
def service(request, tmp_path_factory, tiny_model_dir):
    if request.param == "distributed":
        request.applymarker(pytest.mark.rabbitmq)
        servers = {"broker": request.getfixturevalue("amqp_url"), "store": request.getfixturevalue("redis_url")}
    else:
        servers = {"broker": "", "store": ""}
    with running(tmp_path_factory.mktemp(request.param), model=tiny_model_dir, **servers) as svc:
        svc.mode = request.param
        yield svc


def test_readyz_names_the_mode_and_a_worker_with_the_model(service):
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["mode"] == service.mode
    [worker] = ready["workers"].values()
    assert worker["device"] == "cpu" and worker["dtype"] == "float32" and worker["untrained"] is True
    assert worker["runtime"] in ("onnxruntime", "torch") and worker["runtime_note"]  # auto: the faster one


def test_upload_is_scored_by_the_real_model(service, speech_wav):
    r = service.submit(speech_wav, priority="high", metadata='{"call": "42"}')
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = service.finish(r.json()["id"])
    assert job["status"] == "succeeded", job
    out = job["output"]
    assert set(out["scores"]) == set(LABELS) and len(LABELS) == 9
    assert math.isclose(sum(out["scores"].values()), 1.0, abs_tol=1e-4)
    assert out["top_label"] == max(out["scores"], key=out["scores"].get)
    assert out["model"]["untrained"] is True and out["model"]["runtime"] in ("onnxruntime", "torch")
    assert job["input"]["duration_s"] == pytest.approx(3.0, abs=0.05)
    assert job["metadata"] == {"call": "42"} and job["priority"] == "high"
    assert job["started_at"] and job["finished_at"] and job["dedup"]["reused"] is False


def test_same_audio_again_reuses_the_result_without_a_task(service, speech_wav):
    first = service.finish(service.submit(speech_wav).json()["id"])
    assert first["status"] == "succeeded"
    before = service.tasks_received()
    r = service.submit(speech_wav)
    assert r.status_code == 200  # finished at once
    again = r.json()
    assert again["status"] == "succeeded" and again["dedup"]["source"] == "cache"
    assert again["output"] == first["output"] and again["id"] != first["id"]
    assert service.tasks_received() == before
    # answered on the event loop in distributed mode (Intake.reuse), in a thread in embedded mode: the same job
    assert again["input"] == first["input"] and list(again["input"]) == list(first["input"])
    assert again["options"] == first["options"] and service.job(again["id"]) == again


def test_concurrent_identical_uploads_run_the_model_once(service, speech_wav, tmp_path):
    from audio_factory import distinct_clips

    [clip] = distinct_clips(speech_wav, tmp_path, 1)  # bytes this service has not seen
    clip = clip.rename(tmp_path / f"{service.mode}-{clip.name}")
    before = service.tasks_received()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: service.submit(clip), range(8)))
    assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses]
    finished = [service.finish(r.json()["id"]) for r in responses]
    assert {j["status"] for j in finished} == {"succeeded"}
    assert len({j["dedup"]["run_id"] for j in finished}) == 1
    assert sum(not j["dedup"]["reused"] for j in finished) == 1
    assert service.tasks_received() == before + 1


def test_prefer_wait_answers_with_the_finished_job(service, speech_wav, tmp_path):
    from audio_factory import distinct_clips

    [clip] = distinct_clips(speech_wav, tmp_path, 2)[1:]
    clip = clip.rename(tmp_path / f"{service.mode}-wait.wav")
    r = service.submit(clip, headers={"Prefer": "wait=60"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded" and r.headers["preference-applied"] == "wait=60"


def test_undecodable_upload_is_a_422_with_a_code(service, tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"this is not audio at all" * 100)
    r = service.submit(bad)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "audio_undecodable"


def test_celery_cli_ping_and_status_answer(service):
    ping = service.celery("inspect", "ping", "--timeout", "10", "-d", service.worker_name)
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
    status = service.celery("status", "--timeout", "3")
    assert status.returncode == 0 and "emotionq-cpu@" in status.stdout, status.stdout + status.stderr
