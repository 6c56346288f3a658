"""Webhooks end to end: real API, workers and RabbitMQ/Redis, a real receiver on loopback."""

from __future__ import annotations

import time

import httpx
import pytest
from standardwebhooks import Webhook

from audio_factory import distinct_clips
from harness import ROOT, free_port, running
from webhook_receiver import Receiver

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(600)]

SCHEDULE = "0,0.3,0.6,1,1,1.5,1.5,2"  # 8 attempts over about 8 s


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir, redis_url):
    with running(tmp_path_factory.mktemp("webhooks"), model=tiny_model_dir, store=redis_url,
                 webhook_allow_networks="127.0.0.1/32,::1/128", webhook_retry_schedule=SCHEDULE,
                 env={"PYTHONPATH": str(ROOT / "tests" / "rebinding_dns")}) as svc:  # see test_dns_rebinding_...
        yield svc


@pytest.fixture
def clips(speech_wav, tmp_path):
    return iter(distinct_clips(speech_wav, tmp_path, 4))


def _secrets(service) -> list[str]:
    return [s["secret"] for s in service.http.get("/v1/webhooks/secrets").json()["secrets"]]


def _settled(service, job_id: str, event: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hook = service.job(job_id)["webhook"]
        found = [d for d in hook["deliveries"] if d["event"] == event]
        if found and found[0]["status"] != "pending":
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"{event} delivery of {job_id} still pending: {service.job(job_id)['webhook']}")


def test_signed_events_verify_with_the_standardwebhooks_library(service, receiver, clips):
    r = service.submit(next(clips), webhook_url=receiver.url("ok"), webhook_events="job.started")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    got = receiver.wait("ok", 2)
    by_type = {Receiver.payload(g)["type"]: g for g in got}
    assert set(by_type) == {"job.started", "job.succeeded"}
    [secret] = _secrets(service)
    for request in got:
        data = Webhook(secret).verify(request["body"], request["headers"])
        assert data["data"]["id"] == job_id
    done = Receiver.payload(by_type["job.succeeded"])
    assert done["data"]["status"] == "succeeded" and len(done["data"]["output"]["scores"]) == 9
    assert abs(int(by_type["job.succeeded"]["headers"]["webhook-timestamp"]) - time.time()) < 30
    delivered = _settled(service, job_id, "job.succeeded")
    assert delivered["status"] == "delivered" and delivered["attempts"] == 1 and delivered["last_status"] == 200


def test_500_twice_then_200_is_one_success_under_one_webhook_id(service, receiver, clips):
    receiver.scripts["flaky"] = [500, 500, 200]
    job_id = service.submit(next(clips), webhook_url=receiver.url("flaky")).json()["id"]
    got = receiver.wait("flaky", 3)
    delivered = _settled(service, job_id, "job.succeeded")
    assert delivered["status"] == "delivered" and delivered["attempts"] == 3
    assert len({g["headers"]["webhook-id"] for g in got}) == 1 and delivered["id"] == got[0]["headers"]["webhook-id"]
    time.sleep(1.5)
    assert len(receiver.received("flaky")) == 3  # nothing after the success
    [secret] = _secrets(service)
    assert all(Webhook(secret).verify(g["body"], g["headers"]) for g in got)


def test_a_receiver_that_is_down_for_a_while_gets_the_event_when_it_is_back(service, clips):
    port = free_port()
    job_id = service.submit(next(clips), webhook_url=f"http://127.0.0.1:{port}/late").json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        hook = service.job(job_id)["webhook"]["deliveries"]
        if hook and hook[0]["attempts"] >= 2:
            break
        time.sleep(0.1)
    assert "ConnectError" in hook[0]["last_error"] and hook[0]["status"] == "pending"
    late = Receiver(port=port)
    try:
        got = late.wait("late", 1)
        assert Receiver.payload(got[0])["data"]["id"] == job_id
        assert _settled(service, job_id, "job.succeeded")["status"] == "delivered"
    finally:
        late.close()


def test_410_stops_retries(service, receiver, clips):
    receiver.scripts["gone"] = [410]
    job_id = service.submit(next(clips), webhook_url=receiver.url("gone")).json()["id"]
    failed = _settled(service, job_id, "job.succeeded")
    assert failed["status"] == "failed" and failed["attempts"] == 1 and failed["last_status"] == 410
    time.sleep(1.5)
    assert len(receiver.received("gone")) == 1


def test_redirects_are_not_followed(service, receiver, clips):
    receiver.scripts["moved"] = [302]
    receiver.headers["moved"] = {"location": receiver.url("redirect-target")}
    job_id = service.submit(next(clips), webhook_url=receiver.url("moved")).json()["id"]
    receiver.wait("moved", 2)
    delivery = service.job(job_id)["webhook"]["deliveries"][0]
    assert delivery["last_status"] == 302 and "redirects are not followed" in delivery["last_error"]
    assert receiver.received("redirect-target") == []


def test_deduped_and_coalesced_jobs_each_get_their_own_webhook(service, receiver, speech_wav, tmp_path):
    import concurrent.futures

    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = list(pool.map(lambda _: service.submit(clip, webhook_url=receiver.url("dedup")), range(3)))
    ids = {r.json()["id"] for r in first}
    for job_id in ids:
        service.finish(job_id)
    cached = service.submit(clip, webhook_url=receiver.url("dedup"))
    assert cached.json()["dedup"]["source"] == "cache"
    ids.add(cached.json()["id"])
    got = receiver.wait("dedup", 4)
    time.sleep(1)
    got = receiver.received("dedup")
    assert {Receiver.payload(g)["data"]["id"] for g in got} == ids and len(got) == 4
    assert len({g["headers"]["webhook-id"] for g in got}) == 4


def test_rotation_signs_with_old_and_new_then_redelivery_reuses_the_id(service, receiver, clips):
    [old] = _secrets(service)
    rotated = service.http.post("/v1/webhooks/secrets/rotate", params={"grace_seconds": 3600}).json()
    new = rotated["secrets"][0]["secret"]
    assert new != old and [s["secret"] for s in rotated["secrets"]] == [new, old]
    job_id = service.submit(next(clips), webhook_url=receiver.url("rotated")).json()["id"]
    [got] = receiver.wait("rotated", 1)
    assert len(got["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(got["body"], got["headers"])
    _settled(service, job_id, "job.succeeded")
    again = service.http.post(f"/v1/jobs/{job_id}/webhook/redeliver")
    assert again.status_code == 200
    second = receiver.wait("rotated", 2)[1]
    assert second["headers"]["webhook-id"] == got["headers"]["webhook-id"] and second["body"] == got["body"]
    service.http.post("/v1/webhooks/secrets/rotate", params={"grace_seconds": 0})
    assert len(_secrets(service)) == 1


def test_private_address_refused_unless_allowed(service, clips):
    clip = next(clips)
    for url in ("http://10.1.2.3/hook", "http://169.254.169.254/latest", "http://[fd00::1]/x", "ftp://example.com/"):
        r = service.submit(clip, webhook_url=url)
        assert r.status_code == 422 and r.json()["code"].startswith("webhook_url_"), (url, r.text)
    assert service.submit(clip, webhook_url="http://127.0.0.1:9/allowed-here").status_code == 202


def test_the_documented_receiver_example_verifies_and_accepts(service, clips):
    import subprocess
    import sys

    port = free_port()
    env = {"EMOTIONQ_WEBHOOK_SECRETS": ",".join(_secrets(service)), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "webhook_receiver.py"), str(port)],
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        job_id = service.submit(next(clips), webhook_url=f"http://127.0.0.1:{port}/emotionq").json()["id"]
        delivered = _settled(service, job_id, "job.succeeded")
        assert delivered["status"] == "delivered" and delivered["last_status"] == 204
        forged = httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", headers={
            "webhook-id": "msg_x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"})
        assert forged.status_code == 400
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert job_id in out and '"type": "job.succeeded"' in out


def test_dns_rebinding_cannot_reach_an_address_that_was_not_checked(service, receiver, clips):
    """The webhook worker resolves ``rebind.emotionq.test`` to 127.0.0.1 (allowed), then 127.0.0.2
    (not allowed), in turn (tests/rebinding_dns): the delivery must go to the address it checked."""
    elsewhere = Receiver(port=receiver.port, host="127.0.0.2")
    try:
        job_id = service.submit(next(clips), webhook_url=f"http://rebind.emotionq.test:{receiver.port}/rebind").json()["id"]
        delivered = _settled(service, job_id, "job.succeeded")
        assert delivered["status"] == "delivered" and delivered["attempts"] == 1, delivered
        [got] = receiver.received("rebind")
        assert got["headers"]["Host"] == f"rebind.emotionq.test:{receiver.port}"
        assert elsewhere.received("rebind") == []
    finally:
        elsewhere.close()
