"""The HTTP contract, against a real API process in embedded mode with no worker running."""

from __future__ import annotations

import time

import httpx
import pytest

from audio_factory import make_speech
from conftest import distinct_clips
from harness import Service

MAX_BYTES = 400_000
MAX_SECONDS = 6


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("api")
    svc = Service.distributed(tmp, broker="", store="", model=tiny_model_dir,  # embedded mode
                              max_upload_bytes=MAX_BYTES, max_audio_seconds=MAX_SECONDS)
    svc.start_api()
    yield svc
    svc.stop_all()


@pytest.fixture
def clip(speech_wav, tmp_path):
    return distinct_clips(speech_wav, tmp_path, 1)[0]


def _problem(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    return body


def test_health_and_not_ready_without_workers(api):
    assert httpx.get(f"{api.url}/healthz").json()["status"] == "ok"
    r = httpx.get(f"{api.url}/readyz")
    _problem(r, 503, "no_workers")
    assert r.headers["retry-after"]


def test_not_multipart(api):
    _problem(api.http.post("/v1/jobs", content=b"RIFF....", headers={"content-type": "audio/wav"}),
             422, "not_multipart")


def test_missing_file_part(api):
    _problem(api.http.post("/v1/jobs", data={"priority": "low"}, files={"other": ("a", b"x")}),
             422, "missing_file")
    _problem(api.http.post("/v1/jobs", files={"priority": (None, "low")}), 422, "missing_file")


@pytest.mark.parametrize("fields, fragment", [
    ({"priority": "urgent"}, "priority"),
    ({"granularity": "word"}, "granularity"),
    ({"embedding": "maybe"}, "embedding"),
    ({"metadata": "[1, 2]"}, "metadata"),
    ({"metadata": "{not json"}, "metadata"),
    ({"colour": "red"}, "unknown form fields"),
])
def test_bad_fields(api, clip, fields, fragment):
    assert fragment in _problem(api.submit(clip, **fields), 422, "invalid_request")["detail"]


def test_upload_over_the_byte_limit(api, tmp_path):
    big = make_speech(tmp_path / "big.wav", seconds=MAX_SECONDS - 1, rate=48000)
    assert big.stat().st_size > MAX_BYTES
    _problem(api.submit(big), 413, "payload_too_large")
    assert not list((api.workdir / "var" / "blobs" / "tmp").iterdir())  # the partial upload is gone


def test_audio_over_the_duration_limit(api, tmp_path):
    long = make_speech(tmp_path / "long.wav", seconds=MAX_SECONDS + 2, rate=8000)
    _problem(api.submit(long), 422, "audio_too_long")


def test_empty_and_undecodable_files(api, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    r = api.submit(empty)
    assert r.status_code == 422 and r.json()["code"] in ("audio_empty", "audio_undecodable"), r.text
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(bytes(range(256)) * 40)
    _problem(api.submit(junk), 422, "audio_undecodable")


def test_unknown_job_is_404(api):
    _problem(api.http.get("/v1/jobs/job_nope"), 404, "not_found")
    _problem(api.http.post("/v1/jobs/job_nope/cancel"), 404, "not_found")


def test_queued_job_can_be_canceled_once(api, clip):
    r = api.submit(clip)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    job_id = r.json()["id"]
    canceled = api.http.post(f"/v1/jobs/{job_id}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert api.job(job_id)["finished_at"]
    _problem(api.http.post(f"/v1/jobs/{job_id}/cancel"), 409, "job_finished")


def test_idempotency_key(api, clip, speech_wav):
    first = api.submit(clip, headers={"Idempotency-Key": "order-7"})
    again = api.submit(clip, headers={"Idempotency-Key": "order-7"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    _problem(api.submit(clip, headers={"Idempotency-Key": "order-7"}, priority="high"), 409,
             "idempotency_key_reused")


def test_prefer_wait_times_out_with_the_unfinished_job(api, clip):
    started = time.monotonic()
    r = api.submit(clip, headers={"Prefer": "wait=1"})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert r.headers["preference-applied"] == "wait=1"
    assert 0.9 < time.monotonic() - started < 10


def test_openapi_documents_the_job_routes(api):
    paths = httpx.get(f"{api.url}/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/healthz", "/readyz"} <= set(paths)


def test_loopback_webhook_refused_without_an_allowlist(api, clip):
    r = api.submit(clip, webhook_url="http://127.0.0.1:8080/hook")
    assert r.status_code == 422 and r.json()["code"] == "webhook_url_refused"
    r = api.submit(clip, webhook_events="job.started")
    assert r.status_code == 422 and "webhook_url" in r.json()["detail"]


def test_calls_without_a_valid_api_key_are_401(api, clip):
    for headers in ({}, {"Authorization": "Bearer eq_not-a-key"}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        r = httpx.post(f"{api.url}/v1/jobs", files={"file": clip.open("rb")}, headers=headers)
        _problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
    _problem(httpx.get(f"{api.url}/v1/jobs/job_nope"), 401, "unauthorized")
    assert not list((api.workdir / "var" / "blobs" / "tmp").iterdir())  # refused before reading the upload


def test_jobs_belong_to_the_client_of_the_key(api, clip):
    job_id = api.submit(clip).json()["id"]
    with api.as_client("bob") as bob:
        _problem(bob.get(f"/v1/jobs/{job_id}"), 404, "not_found")
        _problem(bob.post(f"/v1/jobs/{job_id}/cancel"), 404, "not_found")
        _problem(bob.post(f"/v1/jobs/{job_id}/webhook/redeliver"), 404, "not_found")
    with api.as_client("tests") as second_key_of_the_same_client:
        assert second_key_of_the_same_client.get(f"/v1/jobs/{job_id}").json()["id"] == job_id


def test_keys_are_stored_hashed_and_revocable(api, clip):
    import subprocess
    import sys

    from harness import ROOT

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "emotionq.cli", "keys", *args], cwd=ROOT, env=api.env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    key = api.create_key("carol")
    listing = cli("list")
    [line] = [line for line in listing.splitlines() if " carol " in line]
    assert key not in listing
    store_bytes = b"".join(p.read_bytes() for p in (api.workdir / "var").glob("emotionq.sqlite3*"))
    assert key.encode() not in store_bytes and key.removeprefix("eq_").encode() not in store_bytes
    carol = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{api.url}/v1/webhooks/secrets", headers=carol).status_code == 200
    cli("revoke", line.split()[0])
    _problem(httpx.get(f"{api.url}/v1/webhooks/secrets", headers=carol), 401, "unauthorized")
