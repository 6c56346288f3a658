"""A job's Server-Sent Events against a real API, worker, RabbitMQ and Redis: queued, running,
succeeded; heartbeats; a dropped stream resumed with Last-Event-ID on a second API process."""

from __future__ import annotations

import json

import httpx
import pytest

from audio_factory import distinct_clips
from harness import Service, running

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(300)]


def _events(response, *, until=None):
    """(event, id, data) of the stream, and the comments, until ``until(event)`` or the stream ends."""
    events, comments, block = [], [], {}
    for line in response.iter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif line == "":
            if block:
                events.append((block.get("event"), block.get("id"), json.loads(block.get("data", "null"))))
                block = {}
                if until and until(events[-1][0]):
                    break
        else:
            field, _, value = line.partition(":")
            block[field] = value.removeprefix(" ")
        if until and comments and until(":"):
            break
    return events, comments


@pytest.fixture
def two_apis(tmp_path, tiny_model_dir, redis_url):
    with running(tmp_path, model=tiny_model_dir, store=redis_url, worker=False, events_ping_s=1) as svc:
        other = Service(env={k: v for k, v in svc.env.items() if k != "EMOTIONQ_PORT"}, workdir=tmp_path)
        other.procs = svc.procs  # stopped with the first
        other.spawn("api2", "api")
        other.wait_until(lambda: httpx.get(f"{other.url}/healthz", timeout=1).status_code == 200, 60, "api2")
        other.http.headers.update(svc.http.headers)  # the same client's key: one store
        yield svc, other
        other.http.close()


def test_queued_running_succeeded_resumed_on_another_api(two_apis, speech_wav, tmp_path):
    first, second = two_apis
    [clip] = distinct_clips(speech_wav, tmp_path, 1)  # never scored before: not answered from the cache
    job_id = first.submit(clip).json()["id"]
    with second.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        seen = {"position": False}

        def enough(event):
            seen["position"] |= event == "position"
            return seen["position"] and event == ":"

        events, comments = _events(r, until=enough)  # then the client drops the connection
    assert events[0][:2] == ("queued", "1") and events[0][2]["status"] == "queued"
    assert ("position", None) in [e[:2] for e in events] and comments  # `: ping` heartbeats meanwhile
    first.start_worker()
    assert first.finish(job_id)["status"] == "succeeded"
    with first.http.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "1"}, timeout=30) as r:
        resumed, _ = _events(r)  # the stream ends by itself after the terminal event
    assert [e[:2] for e in resumed] == [("running", "2"), ("succeeded", "3")]
    assert resumed[-1][2]["output"]["top_label"]
    with second.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=30) as r:
        replay, _ = _events(r)
    assert [e[0] for e in replay] == ["queued", "running", "succeeded"]


def test_the_python_client_follows_the_events(two_apis, speech_wav, tmp_path):
    from emotionq.client import Client

    first, second = two_apis
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    job_id = first.submit(clip).json()["id"]
    first.start_worker()
    key = first.http.headers["authorization"].removeprefix("Bearer ")
    with Client(second.url, key) as api:
        events = [event for event, _, _ in api.events(job_id) if event not in ("ping", "position")]
        assert events == ["queued", "running", "succeeded"]
        assert api.wait(job_id, timeout=30)["status"] == "succeeded"
    routes = httpx.get(f"{second.url}/metrics").text
    assert 'route="/v1/jobs/{job_id}/events"' in routes  # the stream, not polls, carried the wait


def test_another_clients_job_has_no_events(two_apis, speech_wav):
    first, second = two_apis
    job_id = first.submit(speech_wav).json()["id"]
    with first.as_client("someone-else") as other:
        r = other.get(f"/v1/jobs/{job_id}/events")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def _first(api, job_id: str, last_event_id: bytes):
    """The status, then the events and comments of the job's stream up to its first heartbeat (sent only
    while the stream is open), or up to its end."""
    with api.http.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last_event_id},
                         timeout=10) as r:
        if r.status_code != 200:
            return r.status_code, [], []
        return (r.status_code, *_events(r, until=lambda event: event == ":"))


def test_an_id_the_job_has_not_had_replays_it_from_the_start(two_apis, speech_wav, tmp_path):
    first, _ = two_apis  # no worker: the job stays queued
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    job_id = first.submit(clip).json()["id"]
    for last in (b"99", b"4", b"1_0", b"3", b"2", b"01", b"+1", b"\xb2"):  # never sent, or not yet had
        status, events, comments = _first(first, job_id, last)
        assert status == 200 and events and events[0][:2] == ("queued", "1"), (last, events)
        assert events[0][2]["status"] == "queued" and comments, (last, events, comments)  # and still open
    status, events, comments = _first(first, job_id, b"1")  # the one it has had: resumed after it
    assert status == 200 and "queued" not in [e[0] for e in events] and comments


def test_any_last_event_id_on_a_queued_job_gives_its_events(two_apis, speech_wav, tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    first, _ = two_apis
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    job_id = first.submit(clip).json()["id"]
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                          max_size=24).map(lambda text: text.strip(" \t"))  # what HTTP carries, as sent

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
    @given(last=st.one_of(header_text, st.integers(-5, 10**20).map(str), st.sampled_from(["1", "2", "3"])))
    def stream_of(last):
        status, events, comments = _first(first, job_id, last.encode("latin-1"))
        assert status < 500, (last, status)
        assert events or comments, last  # never an empty stream while the job waits
        if status == 200 and last != "1":
            assert events[0][:2] == ("queued", "1"), (last, events)

    stream_of()
