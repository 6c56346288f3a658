"""Jobs by URL against a real API and a real loopback HTTP server: the audio is fetched, hashed and
deduped like an upload; every bad URL is a 4xx with its code (private, loopback and metadata
targets in every spelling, redirects to them, DNS that rebinds, other schemes, servers that never
answer, send too much or send a web page), and a refused fetch leaves nothing behind."""

from __future__ import annotations

import httpx
import pytest

from audio_server import AudioServer
from harness import ROOT, running
from servers import free_port

pytestmark = pytest.mark.timeout(300)

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def origin():
    """The recordings' server on 127.0.0.1 (allowed), and a twin on 127.0.0.2 (not allowed) that must
    never be reached."""
    main = AudioServer("127.0.0.1")
    twin = AudioServer("127.0.0.2", port=main.port)
    yield main, twin
    main.close()
    twin.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir, origin):
    """The API in embedded mode, no worker (accepted jobs stay queued), fetching from 127.0.0.1 only."""
    with running(tmp_path_factory.mktemp("audio-url"), model=tiny_model_dir, broker="", store="", worker=False,
                 audio_url_allow_networks="127.0.0.1/32", audio_url_allow_http="true", audio_url_read_timeout_s=1,
                 audio_url_timeout_s=4, max_upload_bytes=LIMIT, audio_url_s3_buckets="allowed-bucket",
                 env={"PYTHONPATH": str(ROOT / "tests" / "rebinding_dns")}) as svc:
        yield svc


@pytest.fixture(scope="module")
def clip(origin, speech_wav):
    main, twin = origin
    data = speech_wav.read_bytes()
    main.files["speech.wav"] = twin.files["speech.wav"] = data
    return data


def _post(api, body: dict) -> httpx.Response:
    return api.http.post("/v1/jobs", json=body)


def _problem(r: httpx.Response, status: int, code: str) -> dict:
    assert (r.status_code, r.headers["content-type"]) == (status, "application/problem+json"), r.text
    assert r.json()["code"] == code, r.text
    return r.json()


def _stored(api) -> list:
    return [p for p in (api.workdir / "var" / "blobs").rglob("*") if p.is_file()]


def test_a_job_by_url_is_fetched_hashed_and_deduped_like_an_upload(api, origin, clip):
    main, twin = origin
    r = _post(api, {"audio_url": main.url("/files/speech.wav") + "?X-Amz-Signature=secret", "priority": "high",
                    "metadata": {"call": "c-1"}, "webhook_events": []})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["input"]["url"] == main.url("/files/speech.wav")  # without the query string's credentials
    assert job["input"]["filename"] == "speech.wav" and job["input"]["bytes"] == len(clip)
    assert job["priority"] == "high" and job["metadata"] == {"call": "c-1"}
    again = api.http.post("/v1/jobs", files={"file": ("same.wav", clip)}, data={"priority": "high"})
    assert again.status_code == 202 and again.json()["dedup"]["source"] == "coalesced"
    assert again.json()["dedup"]["run_id"] == job["dedup"]["run_id"]  # one run for the bytes, however they came
    assert twin.requests == []


def test_dns_that_rebinds_cannot_steer_the_fetch_elsewhere(api, origin, clip):
    """rebind.emotionq.test resolves to 127.0.0.1 (allowed), then 127.0.0.2 (tests/rebinding_dns): the
    fetch connects to the address it checked, with the URL's host in its Host header."""
    main, twin = origin
    url = f"http://rebind.emotionq.test:{main.port}/files/speech.wav"
    r = _post(api, {"audio_url": url, "granularity": "frame"})
    assert r.status_code == 202, r.text
    assert main.seen("/files/speech.wav")[-1]["host"] == f"rebind.emotionq.test:{main.port}"
    assert twin.requests == []


@pytest.mark.parametrize("target", [
    "http://127.0.0.2:{port}/files/speech.wav",          # loopback, not the allowed address
    "http://2130706434:{port}/files/speech.wav",         # the same, decimal
    "http://0x7f000002:{port}/files/speech.wav",         # hex
    "http://0177.0.0.2:{port}/files/speech.wav",         # octal
    "http://[::ffff:127.0.0.2]:{port}/files/speech.wav",  # IPv6-mapped
    "http://[::1]:{port}/files/speech.wav",
    "http://0.0.0.0:{port}/files/speech.wav",
    "http://169.254.169.254/latest/meta-data/",          # cloud metadata
    "http://[::ffff:a9fe:a9fe]/latest/meta-data/",       # the same, IPv6-mapped hex
    "http://10.0.0.1/a.wav",
    "http://192.168.1.1/a.wav",
    "http://[fd00::1]/a.wav",
    "{origin}/redirect?to=http://169.254.169.254/latest/meta-data/",  # a redirect to them
    "{origin}/redirect?to=http://127.0.0.2:{port}/files/speech.wav",
    "{origin}/redirect?to=http://[::ffff:7f00:2]:{port}/files/speech.wav",
    "s3://another-bucket/speech.wav",                    # a bucket the operator did not allow
])
def test_private_loopback_and_metadata_targets_are_refused(api, origin, target):
    main, twin = origin
    before = _stored(api)
    url = target.format(port=main.port, origin=f"http://127.0.0.1:{main.port}")
    _problem(_post(api, {"audio_url": url}), 422, "audio_url_refused")
    assert twin.requests == [] and _stored(api) == before


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/a.wav", "file:///etc/passwd", "gopher://127.0.0.1:70/x",
                                 "data:audio/wav;base64,UklGRg==", "javascript:alert(1)", "not a url",
                                 "http://user:secret@127.0.0.1:{port}/files/speech.wav",
                                 "{origin}/redirect?to=file:///etc/passwd"])
def test_other_schemes_and_malformed_urls_are_invalid(api, origin, url):
    main, _ = origin
    url = url.format(port=main.port, origin=f"http://127.0.0.1:{main.port}")
    _problem(_post(api, {"audio_url": url}), 422, "audio_url_invalid")


@pytest.mark.parametrize("path, status, code", [
    ("/never", 422, "audio_url_unreachable"),        # a server that never answers: the read timeout
    ("/status/404", 422, "audio_url_unreachable"),
    ("/status/503", 422, "audio_url_unreachable"),
    ("/loop", 422, "audio_url_unreachable"),         # redirects for ever
    ("/endless", 413, "payload_too_large"),          # more than the limit, no length declared
    ("/lying-length", 413, "payload_too_large"),     # refused on its header, before a byte is read
    ("/html", 422, "audio_undecodable"),             # a body that is not audio
])
def test_servers_that_misbehave_give_a_clear_4xx(api, origin, path, status, code):
    main, _ = origin
    before = _stored(api)
    body = _problem(_post(api, {"audio_url": main.url(path)}), status, code)
    assert body["detail"] and _stored(api) == before
    if path == "/status/503":
        assert body["retryable"] is True


def test_unreachable_hosts_and_ports(api):
    _problem(_post(api, {"audio_url": "http://nowhere.invalid/a.wav"}), 422, "audio_url_unreachable")
    _problem(_post(api, {"audio_url": f"http://127.0.0.1:{free_port()}/a.wav"}), 422, "audio_url_unreachable")


def test_the_body_is_checked_before_anything_is_fetched(api, origin):
    main, _ = origin
    seen = len(main.requests)
    _problem(_post(api, {"priority": "high"}), 422, "missing_audio_url")
    _problem(_post(api, {"audio_url": main.url("/files/speech.wav"), "priority": "urgent"}), 422, "invalid_request")
    _problem(_post(api, {"audio_url": main.url("/files/speech.wav"), "colour": "red"}), 422, "invalid_request")
    _problem(api.http.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}), 422,
             "invalid_request")
    assert len(main.requests) == seen


def test_plain_http_and_unlisted_hosts_are_refused_by_policy():
    import harness
    from emotionq.errors import AudioURLError
    from emotionq.web.fetch import Policy

    https_only = Policy.from_settings(harness.settings(audio_url_hosts="*.example.com"))
    with pytest.raises(AudioURLError) as plain:
        https_only.check("http://audio.example.com/a.wav")
    assert plain.value.code == "audio_url_invalid"
    with pytest.raises(AudioURLError) as unlisted:
        https_only.check("https://8.8.8.8/a.wav")  # refused before it is resolved or connected to
    assert unlisted.value.code == "audio_url_refused"
