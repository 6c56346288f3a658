"""AsyncClient against the running service (the same answers as Client), and ``wait`` following a job's
Server-Sent Events: resumed with Last-Event-ID after the API restarts or a silent stream times out, and
long polls where what answers is not an event stream (a real HTTP proxy in front of the API that has none)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from audio_factory import distinct_clips
from emotionq.client import AsyncClient, Client, Event
from emotionq.client.calls import Following
from emotionq.errors import APIError
from harness import fresh_redis_db, running

pytestmark = [pytest.mark.timeout(300), pytest.mark.rabbitmq, pytest.mark.redis]


def story(events) -> list[str]:
    return [e.event for e in events if e.event != "ping"]


def test_async_client_gives_the_same_answers_as_client(service, speech_wav, tmp_path):
    clips = distinct_clips(speech_wav, tmp_path, 3)

    async def use_async() -> dict:
        async with AsyncClient(service.url, service.key) as api:
            submitted = await asyncio.gather(*(api.submit(clip, priority="high", metadata={"n": str(n)})
                                               for n, clip in enumerate(clips)))
            finished = await asyncio.gather(*(api.wait(job["id"], timeout=120) for job in submitted))
            seen = [[e async for e in api.events(job["id"])] for job in finished]
            read = [await api.job(job["id"]) for job in finished]
            errors = []
            for call in (api.cancel(finished[0]["id"]), api.submit(clips[0], priority="urgent")):
                with pytest.raises(APIError) as info:
                    await call
                errors.append((info.value.status, info.value.code))
            return {"submitted": submitted, "finished": finished, "seen": seen, "read": read, "errors": errors}

    got = asyncio.run(use_async())
    assert len({job["id"] for job in got["submitted"]}) == 3  # three uploads in flight at once, three jobs
    assert [job["metadata"] for job in got["finished"]] == [{"n": "0"}, {"n": "1"}, {"n": "2"}]
    with Client(service.url, service.key) as client:
        for job, seen, read in zip(got["finished"], got["seen"], got["read"]):
            assert job["status"] == "succeeded" and job["priority"] == "high"
            assert job == read == client.job(job["id"]) == client.wait(job["id"], timeout=5)
            assert story(seen) == story(client.events(job["id"])) == ["queued", "running", "succeeded"]
            assert seen[-1].data == job and seen[-1].id == "3"
        with pytest.raises(APIError) as cancel:
            client.cancel(got["finished"][0]["id"])
        with pytest.raises(APIError) as invalid:
            client.submit(clips[0], priority="urgent")
        assert got["errors"] == [(cancel.value.status, cancel.value.code), (invalid.value.status, invalid.value.code)]
        assert got["errors"] == [(409, "job_finished"), (422, "invalid_request")]
        again = client.submit(clips[1], wait=30)  # the same audio again: the result the async client got
        assert again["dedup"]["source"] == "cache" and again["output"] == got["finished"][1]["output"]


@pytest.fixture(scope="module")
def api_alone(tmp_path_factory, tiny_model_dir):
    """An API without a worker (jobs stay queued until canceled), whose streams ping only every 30 s."""
    tmp = tmp_path_factory.mktemp("events")
    with running(tmp, model=tiny_model_dir, store=fresh_redis_db(15), worker=False, events_ping_s=30) as svc:
        svc.key = svc.create_key("events")
        yield svc


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "emotionq.client"]


def test_wait_resumes_after_the_api_restarts(api_alone, speech_wav, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="emotionq.client")
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    client = Client(api_alone.url, api_alone.key, backoff=0.2)
    job = client.submit(clip)
    assert job["status"] == "queued"
    result = {}
    waiter = threading.Thread(target=lambda: result.update(job=client.wait(job["id"], timeout=120)))
    waiter.start()
    time.sleep(1.5)  # it has the queued event (id 1) by now
    api_alone.stop("api")
    api_alone.start_api()
    time.sleep(1.0)  # it has reconnected to the new API process
    client.cancel(job["id"])
    waiter.join(60)
    assert result["job"]["status"] == "canceled" and result["job"] == client.job(job["id"])
    said = messages(caplog)
    assert any("dropped" in m and "resuming after event 1" in m for m in said), said
    assert not any("polling" in m for m in said), said
    # What the API sends when resumed: only what came after the id given
    assert story(client.events(job["id"], last_event_id="1")) == ["canceled"]
    assert story(client.events(job["id"])) == ["queued", "canceled"]


def test_a_silent_stream_is_resumed_after_its_read_timeout(api_alone, speech_wav, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="emotionq.client")
    [clip] = distinct_clips(speech_wav, tmp_path, 1)

    async def wait_then_cancel() -> dict:
        async with AsyncClient(api_alone.url, api_alone.key, events_timeout=0.4, retries=30) as api:
            job = await api.submit(clip)
            waiting = asyncio.ensure_future(api.wait(job["id"], timeout=60))
            await asyncio.sleep(2.0)  # the 30 s heartbeat never comes: the stream times out and is reopened
            await api.cancel(job["id"])
            return await waiting

    started = time.monotonic()
    job = asyncio.run(wait_then_cancel())
    assert job["status"] == "canceled" and time.monotonic() - started < 20
    said = messages(caplog)
    resumed = [m for m in said if "ReadTimeout" in m and "resuming after event 1" in m]
    assert len(resumed) >= 2, said
    assert not any("polling" in m for m in said), said


class NoStreams(BaseHTTPRequestHandler):
    """A proxy in front of the API that answers event streams with ``answer`` and forwards everything else."""

    api = ""
    answer: tuple[int, str] = (404, "application/json")
    seen: list[str] = []

    def do_GET(self):
        self.seen.append(self.path)
        if self.path.endswith("/events"):
            status, content_type = self.answer
            body = b'{"code": "not_found", "detail": "no such route"}' if status == 404 else b"<html>hi</html>"
            return self.reply(status, {"content-type": content_type}, body)
        self.forward()

    def do_POST(self):
        self.seen.append(self.path)
        self.forward()

    def forward(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        answer = httpx.request(self.command, self.api + self.path, headers=headers, content=body, timeout=120)
        self.reply(answer.status_code, {"content-type": answer.headers.get("content-type", "")}, answer.content)

    def reply(self, status: int, headers: dict, body: bytes):
        self.send_response(status)
        for name, value in {**headers, "content-length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def proxy(api_url: str, answer: tuple[int, str]):
    handler = type("Proxy", (NoStreams,), {"api": api_url, "answer": answer, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("answer", [(404, "application/problem+json"), (200, "text/html")])
def test_wait_long_polls_where_no_event_stream_answers(api_alone, speech_wav, tmp_path, answer):
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    with proxy(api_alone.url, answer) as (url, seen), Client(url, api_alone.key) as client:
        job = client.submit(clip)
        started = time.monotonic()
        assert client.wait(job["id"], timeout=1.5)["status"] == "queued"  # the long poll ran out: no worker
        assert 1.5 <= time.monotonic() - started < 10
        threading.Timer(1.0, Client(api_alone.url, api_alone.key).cancel, args=(job["id"],)).start()
        assert client.wait(job["id"], timeout=60)["status"] == "canceled"
    events, polls = f"/v1/jobs/{job['id']}/events", f"/v1/jobs/{job['id']}"
    assert seen.count(events) == 2 and seen.count(polls) >= 2, seen


def test_a_resumed_stream_asks_for_what_came_after_the_last_event_seen():
    client = Client("http://127.0.0.1:9", events_timeout=7)
    following = Following(client, "job_1", None, client._events_call)
    assert "Last-Event-ID" not in following.call().headers
    following.seen(Event("queued", "1", {}))
    following.seen(Event("position", None, {}))  # events without an id do not move the resume point
    call = following.call()
    assert call.headers["Last-Event-ID"] == "1" and call.url == "/v1/jobs/job_1/events"
    assert call.timeout.read == 7  # a silent stream is dropped after events_timeout
