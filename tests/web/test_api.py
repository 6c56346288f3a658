"""The HTTP contract, against a real API process in embedded mode with no worker running."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from audio_factory import distinct_clips, make_speech
from harness import ROOT, running

MAX_BYTES = 400_000
MAX_SECONDS = 6


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir):
    with running(tmp_path_factory.mktemp("api"), model=tiny_model_dir, broker="", store="", worker=False,  # embedded
                 max_upload_bytes=MAX_BYTES, max_audio_seconds=MAX_SECONDS) as svc:
        yield svc


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
    # A load balancer's probe where workers scale to zero asks only for the store and the broker.
    ready = httpx.get(f"{api.url}/readyz", params={"workers": 0})
    assert ready.status_code == 200 and ready.json()["workers"] == {}


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


# -- hardening: what an attack on the running service found ---------------------------------------------------------

BOUNDARY = "emotionq-test-boundary"


def _file_part(path, *, close: bool) -> bytes:
    """A multipart body with one 'file' part; without its closing boundary unless ``close``."""
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode()
    return head + path.read_bytes() + (f"\r\n--{BOUNDARY}--\r\n".encode() if close else b"")


def _blobs(api) -> set[str]:
    """The hashes of the audio files filed in the blob store."""
    return {p.name.partition(".")[0] for p in (api.workdir / "var" / "blobs").glob("??/*")}  # <sha>.<generation>


def _leftovers(api) -> list:
    return list((api.workdir / "var" / "blobs" / "tmp").iterdir())


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deeply_nested_metadata_is_a_422_not_a_500(api, clip):
    nested = "[" * 400 + "]" * 400  # well under the field-size cap; json.loads would recurse 400 deep
    assert "8 levels" in _problem(api.submit(clip, metadata=nested), 422, "metadata_too_deep")["detail"]
    assert api.submit(clip, metadata='{"a": {"b": [1, {"c": "[[[[[[[[[[x"}]}}').status_code == 202


def test_a_body_cut_before_its_closing_boundary_is_refused_and_not_kept(api, clip):
    before = _blobs(api)
    body = _file_part(clip, close=False)[:-2000]  # the file's last bytes, and the closing boundary, missing
    r = api.http.post("/v1/jobs", content=body,
                      headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    _problem(r, 422, "incomplete_body")
    assert _blobs(api) == before and not _leftovers(api)
    whole = api.http.post("/v1/jobs", content=_file_part(clip, close=True),
                          headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert whole.status_code == 202, whole.text


def _api_metrics(api) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{api.url}/metrics").text
    return {(s.labels.get("method"), s.labels.get("route"), s.labels.get("status")): s.value
            for family in text_string_to_metric_families(text) if family.name == "emotionq_http_requests"
            for s in family.samples if s.name == "emotionq_http_requests_total"}


def test_a_client_that_hangs_up_mid_upload_is_counted_as_its_doing(api, clip):
    import socket

    mark = len(api.log("api"))
    before = _api_metrics(api)
    body = _file_part(clip, close=True)
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nAuthorization: {api.http.headers['authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", api.port)) as s:
        s.sendall(head.encode() + body[: len(body) // 2])
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while _api_metrics(api).get(("POST", "/v1/jobs", "499"), 0) <= before.get(("POST", "/v1/jobs", "499"), 0):
        assert time.monotonic() < deadline, "the hang-up was not counted as 499"
        time.sleep(0.1)
    after = _api_metrics(api)
    assert after.get(("POST", "/v1/jobs", "500"), 0) == before.get(("POST", "/v1/jobs", "500"), 0)
    log = api.log("api")[mark:]
    assert "closed the connection" in log and "Traceback" not in log and "ERROR" not in log, log
    assert not _leftovers(api)


def test_an_unexpected_error_is_answered_as_a_problem_and_logged_once(api):
    import json
    import sqlite3

    with sqlite3.connect(api.workdir / "var" / "emotionq.sqlite3") as db:  # a job record the code cannot read
        db.execute("INSERT OR REPLACE INTO docs (key, doc, expires_at) VALUES (?, ?, NULL)",
                   ("job:job_unreadable", json.dumps({"client": "tests"})))
    mark = len(api.log("api"))
    _problem(api.http.get("/v1/jobs/job_unreadable"), 500, "internal_error")
    time.sleep(0.5)
    log = api.log("api")[mark:]
    assert log.count("Traceback") == 1 and "GET /v1/jobs/job_unreadable failed" in log, log
    assert "Exception in ASGI application" not in log


def test_unknown_routes_and_methods_are_problems_with_a_code(api):
    r = api.http.get("/v1/nothing-here")
    assert r.headers["content-type"] == "application/problem+json"
    assert _problem(r, 404, "not_found")["detail"].startswith("no such resource")
    _problem(api.http.delete("/v1/jobs"), 405, "method_not_allowed")
    assert "POST" in api.http.delete("/v1/jobs").headers["allow"]


def test_refused_uploads_leave_no_audio_behind(api, speech_wav, tmp_path):
    kept, refused_only = distinct_clips(speech_wav, tmp_path, 2)
    before = _blobs(api)
    assert api.submit(refused_only, webhook_url="http://10.0.0.1/hook").json()["code"] == "webhook_url_refused"
    assert api.submit(refused_only, priority="urgent").json()["code"] == "invalid_request"
    assert api.submit(kept, headers={"Idempotency-Key": "hardening-8"}).status_code == 202
    r = api.submit(refused_only, headers={"Idempotency-Key": "hardening-8"})
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_reused"
    assert _blobs(api) == before | {_sha256(kept)}  # only the accepted upload's audio
    # A refusal never removes audio that an accepted job uses, though it sent the same bytes.
    assert api.submit(kept, webhook_url="http://10.0.0.1/hook").status_code == 422
    assert api.submit(kept, headers={"Idempotency-Key": "hardening-8"}, priority="high").status_code == 409
    assert _sha256(kept) in _blobs(api) and not _leftovers(api)


HEADER_TIMEOUT_S = 2
MAX_CONNECTIONS = 12


@pytest.fixture(scope="module")
def guarded_api(tmp_path_factory, tiny_model_dir):
    with running(tmp_path_factory.mktemp("guarded-api"), model=tiny_model_dir, broker="", store="", worker=False,
                 http_header_timeout_s=HEADER_TIMEOUT_S, http_max_connections=MAX_CONNECTIONS) as svc:
        yield svc


def _drip(sockets: list, request: bytes, *, every_s: float, for_s: float) -> dict[int, tuple[float, bytes]]:
    """Send ``request`` one byte at a time on each socket; {index: (seconds until closed, what came back)}.
    A connection reset (the server closed while a byte was on its way) counts as closed."""
    import select

    started, closed, answers = time.monotonic(), {}, {i: b"" for i in range(len(sockets))}
    k, next_byte = 0, started
    while len(closed) < len(sockets) and time.monotonic() - started < for_s:
        wait = max(0.0, next_byte - time.monotonic())
        readable, _, _ = select.select([s for i, s in enumerate(sockets) if i not in closed], [], [], wait)
        for s in readable:
            i = sockets.index(s)
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                chunk = b""
            answers[i] += chunk
            if not chunk:
                closed[i] = (time.monotonic() - started, answers[i])
        if time.monotonic() < next_byte:
            continue
        for i, s in enumerate(sockets):
            if i not in closed:
                try:
                    s.send(request[k % len(request): k % len(request) + 1])
                except OSError:
                    closed[i] = (time.monotonic() - started, answers[i])
        k, next_byte = k + 1, next_byte + every_s
    return closed


def test_slow_clients_are_timed_out_and_connections_are_bounded(guarded_api):
    import socket

    sockets = [socket.create_connection(("127.0.0.1", guarded_api.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        refused = httpx.get(f"{guarded_api.url}/healthz")  # every connection slot is held by a slow client
        assert refused.status_code == 503
        closed = _drip(sockets, b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n", every_s=0.5, for_s=HEADER_TIMEOUT_S + 6)
    finally:
        for s in sockets:
            s.close()
    assert len(closed) == MAX_CONNECTIONS, (f"{MAX_CONNECTIONS - len(closed)} slow connections were left open; "
                                            f"the API's log ends:\n{guarded_api.log('api')[-3000:]}")
    assert all(seconds < HEADER_TIMEOUT_S + 2 for seconds, _ in closed.values()), closed
    assert any(answer.startswith(b"HTTP/1.1 408") for _, answer in closed.values()), closed
    assert httpx.get(f"{guarded_api.url}/healthz").status_code == 200  # the slots are free again


@pytest.fixture(scope="module")
def two_process_api(tmp_path_factory, tiny_model_dir):
    with running(tmp_path_factory.mktemp("two-process-api"), model=tiny_model_dir, broker="", store="", worker=False,
                 api_workers=2) as svc:
        yield svc


def test_several_api_processes_serve_one_port_and_sum_their_metrics(two_process_api):
    from prometheus_client.parser import text_string_to_metric_families

    def served() -> float:
        text = httpx.get(f"{two_process_api.url}/metrics").text
        return sum(s.value for f in text_string_to_metric_families(text) if f.name == "emotionq_http_requests"
                   for s in f.samples if s.name.endswith("_total") and s.labels["route"] == "/healthz")

    before = served()
    for _ in range(40):  # new connections: the kernel spreads them over both processes
        assert httpx.get(f"{two_process_api.url}/healthz").status_code == 200
    assert served() - before == 40  # all of them, whichever process answered the scrape
    server = _descendants(two_process_api.procs["api"].pid)
    assert sum("multiprocessing.spawn" in _cmdline(pid) for pid in server) == 2, [_cmdline(p) for p in server]


def test_several_api_processes_answer_without_waiting_for_delayed_acks(two_process_api):
    """Their listening socket is uvicorn's own, which asyncio does not give TCP_NODELAY: without the server
    setting it, every answer on a kept-alive connection waited about 40 ms for the client's delayed ACK."""
    with httpx.Client(base_url=two_process_api.url) as client:
        client.get("/healthz")
        took = []
        for _ in range(15):
            began = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            took.append(time.perf_counter() - began)
    assert sorted(took)[len(took) // 2] < 0.03, took


def _descendants(pid: int) -> list[int]:
    found = []
    for child in (int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()):
        found += [child, *_descendants(child)]
    return found


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
