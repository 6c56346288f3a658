"""Many hosts that share only RabbitMQ, Redis and an object store (SeaweedFS): an API host and two
worker hosts, each with its own empty working directory (its own var/, cache and copy of the model),
no filesystem in common. Uploads and jobs by URL (a loopback HTTP server, and an s3:// bucket) are
scored on both worker hosts; a worker host SIGKILLed mid-job loses nothing; identical audio sent
both ways is one object in the bucket and one model run."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from audio_factory import distinct_clips, make_speech
from audio_server import AudioServer
from emotionq.jobs.scheduler import readiness
from emotionq.store import open_store
from harness import Service, _children, fresh_redis_db, rabbitmq_vhost
from servers import PrivateSeaweedFS

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.s3, pytest.mark.timeout(600)]

HOSTS = ("gpu-host-1", "gpu-host-2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("many-hosts")
    with PrivateSeaweedFS(tmp, buckets=("emotionq", "client-audio")) as s3, rabbitmq_vhost() as broker:
        store_url = fresh_redis_db(6)
        common = dict(broker=broker, store=store_url, batch_size=1, audio_url_allow_networks="127.0.0.1/32",
                      audio_url_allow_http="true", audio_url_s3_buckets="client-audio", **s3.settings())
        (tmp / "api-host").mkdir()
        api = Service.distributed(tmp / "api-host", model=tmp / "api-host" / "no-model-here", **common)
        workers = {}
        for host in HOSTS:
            model = shutil.copytree(tiny_model_dir, tmp / host / "model")  # each host has its own copy
            workers[host] = Service.distributed(tmp / host, model=model, worker_host=host, **common)
        store = open_store(store_url)
        try:
            api.start_api()
            for svc in workers.values():
                svc.spawn("worker", "worker")
            names = {f"emotionq-cpu@{h}" for h in HOSTS}
            api.wait_until(lambda: names <= set(readiness.live(store)), 180, "api")
            yield api, workers, s3, store, tmp
        finally:
            for svc in (api, *workers.values()):
                svc.stop_all()
            store.close()


def _kill_host(svc: Service) -> None:
    """SIGKILL every process of a worker host at once: `emotionq worker`, its Celery workers (each in a
    session of its own) and their pool processes, as a power cut would."""
    proc = svc.procs.pop("worker")
    tree, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        try:
            todo += _children(pid)
        except FileNotFoundError:
            pass
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _host(run: dict) -> str:
    return run["worker"].split("@")[1]


def test_uploads_and_jobs_by_url_are_scored_on_both_worker_hosts(cluster, speech_wav):
    api, workers, s3, store, tmp = cluster
    (tmp / "clips").mkdir(exist_ok=True)
    clips = distinct_clips(speech_wav, tmp / "clips", 9)
    origin = AudioServer()
    try:
        for clip in clips[3:6]:
            origin.files[clip.name] = clip.read_bytes()
        s3.client().put_object(Bucket="client-audio", Key="calls/c-9.wav", Body=clips[6].read_bytes())
        with ThreadPoolExecutor(4) as pool:
            uploads = list(pool.map(lambda c: api.submit(c), clips[:3]))
            by_url = list(pool.map(lambda c: api.http.post("/v1/jobs", json={"audio_url": origin.url(f"/files/{c.name}")}),
                                   clips[3:6]))
            from_bucket = api.http.post("/v1/jobs", json={"audio_url": "s3://client-audio/calls/c-9.wav"})
        responses = [*uploads, *by_url, from_bucket]
        assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
        done = [api.finish(r.json()["id"]) for r in responses]
    finally:
        origin.close()
    assert [j["status"] for j in done] == ["succeeded"] * len(done), done
    assert done[-1]["input"]["url"] == "s3://client-audio/calls/c-9.wav"
    hosts = {_host(store.get(f"run:{j['dedup']['run_id']}")) for j in done}
    assert hosts == set(HOSTS), "both worker hosts score jobs"
    # No shared filesystem: the API host kept no audio; each worker host cached only what it scored.
    assert not [p for p in (tmp / "api-host" / "var").rglob("*") if p.is_file() and p.suffix != ".log"]
    for host in HOSTS:
        cached = {p.name for p in (tmp / host / "var" / "blob-cache").glob("??/*")}
        scored = {j["input"]["sha256"] for j in done if _host(store.get(f"run:{j['dedup']['run_id']}")) == host}
        assert cached == scored


def test_identical_audio_by_upload_and_by_url_is_one_object_and_one_model_run(cluster, speech_wav):
    api, workers, s3, store, tmp = cluster
    (tmp / "twins").mkdir(exist_ok=True)
    [clip] = distinct_clips(speech_wav, tmp / "twins", 1)
    origin = AudioServer()
    origin.files["twin.wav"] = clip.read_bytes()
    try:
        with ThreadPoolExecutor(2) as pool:
            upload = pool.submit(api.submit, clip)
            fetched = pool.submit(api.http.post, "/v1/jobs", json={"audio_url": origin.url("/files/twin.wav")})
            first, second = upload.result(), fetched.result()
    finally:
        origin.close()
    assert first.status_code in (200, 202) and second.status_code in (200, 202), (first.text, second.text)
    jobs = [api.finish(r.json()["id"]) for r in (first, second)]
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert jobs[0]["dedup"]["run_id"] == jobs[1]["dedup"]["run_id"]  # one model run
    assert sorted(j["dedup"]["reused"] for j in jobs) == [False, True]
    sha = hashlib.sha256(clip.read_bytes()).hexdigest()
    assert len([k for k in s3.keys("emotionq") if sha in k]) == 1  # one object


def test_a_worker_host_sigkilled_mid_job_loses_nothing(cluster, tmp_path):
    api, workers, s3, store, tmp = cluster
    long = make_speech(tmp_path / "long.wav", seconds=12)
    r = api.submit(long)
    assert r.status_code == 202, r.text
    run_id = r.json()["dedup"]["run_id"]
    deadline = time.monotonic() + 120
    while (run := store.get(f"run:{run_id}"))["state"] != "running":
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    time.sleep(0.5)  # well into the job (about 3 s of work on this model)
    assert store.get(f"run:{run_id}")["state"] == "running"
    victim = _host(run)
    _kill_host(workers[victim])
    job = api.finish(r.json()["id"], timeout=180)
    assert job["status"] == "succeeded", job
    run = store.get(f"run:{run_id}")
    assert _host(run) != victim and run["deliveries"] == 2  # redelivered once, to the other host
