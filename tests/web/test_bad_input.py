"""Hostile and careless input against a real API: wherever user input reaches a standard-library parser
(``urllib.parse``, ``ipaddress``, ``int``/``float``, ``json``, ``datetime``), through a URL field, a
header, a form field, a query or a path parameter, the answer is a 4xx with a code, never a 500. The
last test reads the API's own ``/metrics`` and log: no 5xx was counted and no traceback logged.

The service fetches audio only from 127.0.0.1 (``EMOTIONQ_AUDIO_URL_HOSTS``), so no generated URL
makes it connect anywhere else; it runs no worker, so no webhook is ever delivered.
"""

from __future__ import annotations

import re

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audio_server import AudioServer
from harness import running

pytestmark = pytest.mark.timeout(600)

MALFORMED_HOSTS = ["http://[::1", "http://[zzz]/", "http://[::1/a.wav", "https://[127.0.0.1]/a.wav",
                   "http://[::1]]/a.wav", "http://[fe80::1%25eth0/", "http://127.0.0.1:99999/a.wav",
                   "http://127.0.0.1:x/a.wav", "http://127.0.0.1:-1/a.wav", "http://127.0.0.1:0/a.wav",
                   "http://127.0.0.1/a\x00b.wav", "http://127.0.0.1/a b.wav", "http://127.0.0.1/\x7f",
                   "http://\x00/", "http://@127.0.0.1/a.wav"]


@pytest.fixture(scope="module")
def origin():
    server = AudioServer("127.0.0.1")
    yield server
    server.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir, origin):
    """The API in embedded mode, no worker (accepted jobs stay queued), fetching from 127.0.0.1 only."""
    with running(tmp_path_factory.mktemp("bad-input"), model=tiny_model_dir, broker="", store="", worker=False,
                 audio_url_allow_networks="127.0.0.1/32", audio_url_allow_http="true", audio_url_hosts="127.0.0.1",
                 audio_url_read_timeout_s=1, audio_url_timeout_s=4, webhook_allow_networks="127.0.0.0/8") as svc:
        yield svc


def _problem(r: httpx.Response, status: int, code: str) -> None:
    assert (r.status_code, r.headers.get("content-type")) == (status, "application/problem+json"), r.text
    assert r.json()["code"] == code, r.text


def _a_4xx_with_a_code(r: httpx.Response) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if r.status_code != 404 or r.headers.get("content-type") == "application/problem+json":
        assert r.json()["code"], r.text


@pytest.mark.parametrize("url", MALFORMED_HOSTS)
def test_a_malformed_audio_url_is_invalid(api, url):
    _problem(api.http.post("/v1/jobs", json={"audio_url": url}), 422, "audio_url_invalid")


@pytest.mark.parametrize("location", ["http://[::1", "http://[zzz]/", "//[::1", "http://127.0.0.1:99999/"])
def test_a_redirect_to_a_malformed_url_is_invalid(api, origin, location):
    url = str(httpx.URL(origin.url("/redirect"), params={"to": location}))
    _problem(api.http.post("/v1/jobs", json={"audio_url": url}), 422, "audio_url_invalid")


@pytest.mark.parametrize("url", MALFORMED_HOSTS)
def test_a_malformed_webhook_url_is_invalid_by_url_and_by_upload(api, origin, speech_wav, url):
    """One parser for both paths: a job by URL and an upload refuse the same webhook_url alike."""
    origin.files["speech.wav"] = speech_wav.read_bytes()
    by_url = api.http.post("/v1/jobs", json={"audio_url": origin.url("/files/speech.wav"), "webhook_url": url})
    _problem(by_url, 422, "webhook_url_invalid")
    by_upload = api.http.post("/v1/jobs", files={"file": ("a.wav", speech_wav.read_bytes())},
                              data={"webhook_url": url})
    _problem(by_upload, 422, "webhook_url_invalid")


def _url_text() -> st.SearchStrategy[str]:
    """URL-shaped text that probes the parsers: bracketed hosts (closed or not), odd ports, stray
    characters; hosts are IP-literal-like, so nothing is looked up in DNS."""
    junk = st.text(st.sampled_from("0123456789abcdefz:.%[]@/?#\\ \x00\x7f\u00e9\u0660"), max_size=12)
    host = st.one_of(st.builds("[{}".format, junk), st.builds("[{}]".format, junk), junk,
                     st.just("127.0.0.1"), st.just("[::1]"))
    port = st.one_of(st.just(""), st.builds(":{}".format, junk),
                     st.builds(":{}".format, st.integers(-10, 10**6)))
    return st.builds("{}://{}{}{}{}".format, st.sampled_from(["http", "https", "s3", "ftp", "HTTP", ""]),
                     st.one_of(st.just(""), st.builds("{}@".format, junk)), host, port,
                     st.one_of(st.just("/a.wav"), st.builds("/{}".format, junk)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=_url_text())
def test_no_generated_audio_url_is_a_server_error(api, url):
    _a_4xx_with_a_code(api.http.post("/v1/jobs", json={"audio_url": url}))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=_url_text())
def test_no_generated_webhook_url_is_a_server_error(api, speech_wav, url):
    r = api.http.post("/v1/jobs", files={"file": ("a.wav", speech_wav.read_bytes())}, data={"webhook_url": url})
    assert r.status_code in (200, 202) or 400 <= r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        assert r.json()["code"] in ("webhook_url_invalid", "webhook_url_refused", "invalid_request"), r.text


@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", "/v1/jobs/job_x", {"headers": {"Prefer": "wait=" + "9" * 400}}),
    ("GET", "/v1/jobs/job_x", {"headers": {"Prefer": "wait=1e999, wait=-1, wait=nan"}}),
    ("GET", "/v1/jobs/%00", {}),
    ("GET", "/v1/jobs/%ff%fe", {}),
    ("GET", "/v1/jobs/" + "x" * 5000, {}),
    ("GET", "/v1/jobs/job_x/events", {"headers": {"Last-Event-ID": "\u00b2".encode("latin-1")}}),
    ("GET", "/readyz?workers=1e309", {}),
    ("GET", "/readyz?workers=-1", {}),
    ("GET", "/readyz?workers=%ff", {}),
    ("POST", "/v1/webhooks/secrets/rotate?grace_seconds=1e308", {}),
    ("POST", "/v1/webhooks/secrets/rotate?grace_seconds=nan", {}),
    ("POST", "/v1/webhooks/secrets/rotate?grace_seconds=-5", {}),
    ("POST", "/v1/jobs", {"headers": {"Idempotency-Key": b"\xff" * 300}, "json": {"audio_url": "http://[::1"}}),
    ("POST", "/v1/jobs", {"headers": {"Content-Type": "application/json; charset=\u00b2".encode("latin-1")}, "content": b"{}"}),
    ("POST", "/v1/jobs", {"json": {"audio_url": ["http://127.0.0.1/"]}}),
    ("POST", "/v1/jobs", {"json": {"audio_url": "http://127.0.0.1/a.wav", "webhook_url": 12}}),
    ("POST", "/v1/jobs", {"json": {"audio_url": "http://127.0.0.1/a.wav", "metadata": "{\"a\": NaN}"}}),
    ("POST", "/v1/jobs", {"content": b'{"audio_url": "http://127.0.0.1/\\ud800"}',
                          "headers": {"Content-Type": "application/json"}}),
    ("POST", "/v1/jobs", {"content": b'{"audio_url": "http://127.0.0.1/", "metadata": {"a": "\\udfff"}}',
                          "headers": {"Content-Type": "application/json"}}),
    ("POST", "/v1/jobs", {"files": {"file": ("a.wav", b"RIFF")}, "data": {"metadata": '{"a": "\\ud800"}'}}),
    ("POST", "/v1/jobs", {"content": b'{"audio_url": "http://127.0.0.1/a.wav", "metadata": {"a": NaN}}',
                          "headers": {"Content-Type": "application/json"}}),
    ("POST", "/v1/jobs", {"content": b'{"audio_url": 1e999}', "headers": {"Content-Type": "application/json"}}),
    ("POST", "/v1/jobs", {"files": {"file": ("a.wav", b"RIFF")}, "data": {"vad_threshold": "1e999"}}),
    ("POST", "/v1/jobs", {"files": {"file": ("a.wav", b"RIFF")}, "data": {"min_speech_ms": "9" * 5000}}),
    ("POST", "/v1/jobs", {"files": {"file": ("a.wav", b"RIFF")}, "data": {"metadata": "[" * 100000}}),
    ("POST", "/v1/jobs", {"files": {"file": ("a.wav", b"RIFF")}, "data": {"channel_names": "\u0660,\x00"}}),
    ("POST", "/v1/jobs/job_x/cancel", {"headers": {"Authorization": b"Bearer \xff\xfe"}}),
    ("POST", "/v1/jobs/job_x/webhook/redeliver", {"headers": {"Authorization": "Basic %%%"}}),
])
def test_hostile_headers_queries_paths_and_fields_are_4xx(api, method, path, kwargs):
    r = api.http.request(method, path, **kwargs)
    assert 400 <= r.status_code < 500 or (r.status_code == 200 and path.startswith("/v1/webhooks")), r.text


def test_the_whole_bad_input_suite_left_no_5xx_and_no_traceback(api):
    """Runs last in this module: everything above was answered without a server error."""
    metrics = api.http.get("/metrics").text
    fives = [line for line in metrics.splitlines()
             if line.startswith("emotionq_http_requests_total") and re.search(r'status="5\d\d"', line)]
    assert fives == [], fives
    assert "Traceback" not in api.log("api"), api.log("api")[-4000:]
