"""transcript=true through the whole service: an API, a worker that serves emotion2vec alone and one that
serves SenseVoice too, on RabbitMQ and Redis. Without a SenseVoice worker such a job is refused at once;
once one is up, /v1/models lists it and every such job is scored there, never by the other worker."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from emotionq.client import Client, transcript
from emotionq.inference.audio import SAMPLE_RATE
from emotionq.store import open_store
from harness import ROOT, Service, fresh_redis_db, rabbitmq_vhost

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(400)]

SENSEVOICE_WORKER = "emotionq-cpu@sensevoice-host"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_model_dir, sensevoice_dir):
    tmp = tmp_path_factory.mktemp("transcripts")
    with rabbitmq_vhost() as broker:
        store_url = fresh_redis_db(2)
        common = dict(broker=broker, store=store_url, batch_size=1, webhook_allow_networks="127.0.0.1/32")
        plain = Service.distributed(tmp / "plain", model=tiny_model_dir, **common)
        both = Service.distributed(tmp / "both", model=tiny_model_dir, worker_host="sensevoice-host",
                                   sensevoice_model=sensevoice_dir, **common)
        both.env["EMOTIONQ_VAR_DIR"] = plain.env["EMOTIONQ_VAR_DIR"]  # one blob store, as on one host
        (tmp / "plain").mkdir()
        (tmp / "both").mkdir()
        store = open_store(store_url)
        try:
            plain.start_api()
            plain.start_worker()
            yield plain, both, store
        finally:
            for svc in (plain, both):
                svc.stop_all()
            store.close()


def test_transcripts_are_refused_then_routed_to_the_worker_that_serves_sensevoice(cluster, two_speakers, receiver,
                                                                                  tmp_path):
    api, both, store = cluster
    path, _ = two_speakers
    # Bad input first: 422 with codes, whatever the workers serve.
    for fields, code in (({"transcript": "true", "language": "fr"}, "unknown_language"),
                         ({"itn": "true"}, "needs_transcript"), ({"language": "en"}, "needs_transcript"),
                         ({"transcript": "true"}, "model_unavailable")):  # no live worker serves SenseVoice yet
        r = api.submit(path, **fields)
        assert (r.status_code, r.json()["code"]) == (422, code), r.text
    assert [m["name"] for m in api.http.get("/v1/models").json()["models"]] == ["emotion2vec"]

    both.spawn("worker", "worker")
    api.wait_until(lambda: any(m["name"] == "sensevoice" for m in api.http.get("/v1/models").json()["models"]),
                   180, "api")
    models = {m["name"]: m for m in api.http.get("/v1/models").json()["models"]}
    assert models["sensevoice"]["workers"] == 1 and models["emotion2vec"]["workers"] == 2
    assert models["sensevoice"]["id"] == str(both.env["EMOTIONQ_SENSEVOICE_MODEL"])
    assert models["sensevoice"]["untrained"] is True and models["sensevoice"]["runtime"] == "torch"
    ready = api.http.get("/readyz").json()["workers"]
    assert [m["name"] for m in ready[SENSEVOICE_WORKER]["models"]] == ["emotion2vec", "sensevoice"]

    # Several transcript jobs (each its own audio: no dedup) and plain ones: the plain worker is idle for
    # the transcripts, yet every one of them is scored by the SenseVoice worker.
    data = path.read_bytes()
    ids = []
    for i in range(4):
        variant = path.with_name(f"variant{i}.wav")
        variant.write_bytes(data + bytes(2 * (i + 1)))  # a few more samples of silence at the end
        hook = {"webhook_url": receiver.url("transcripts")} if i == 0 else {}
        r = api.submit(variant, transcript="true", language="en", **hook)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    plain_id = api.submit(path).json()["id"]
    done = [api.finish(job_id) for job_id in ids]
    assert [j["status"] for j in done] == ["succeeded"] * 4, [j.get("error") for j in done]
    for job in done:
        run = store.get(f"run:{job['dedup']['run_id']}")
        assert run["worker"] == SENSEVOICE_WORKER
        out = job["output"]
        assert job["options"]["transcript"] is True and job["options"]["language"] == "en"
        assert [set(s) >= {"text", "language", "events", "emotion_tag"} for s in out["segments"]] == [True, True]
        assert out["segments"][0]["start"] < 0.8 and out["segments"][1]["end"] * SAMPLE_RATE > SAMPLE_RATE * 4
        assert "transcript" in out["channels"][0] and out["models"]["sensevoice"]["untrained"] is True
    assert api.finish(plain_id)["status"] == "succeeded"

    # The webhook carries them; the client and `emotionq submit --segments` expose them.
    [delivery] = receiver.wait("transcripts", 1)
    hooked = receiver.payload(delivery)["data"]["output"]
    assert [s["text"] for s in hooked["segments"]] == [s["text"] for s in done[0]["output"]["segments"]]
    key = api.http.headers["Authorization"].removeprefix("Bearer ")  # the jobs' client
    with Client(api.url, key) as client:
        assert {m["name"] for m in client.models()} == {"emotion2vec", "sensevoice"}
        assert transcript(client.job(ids[0])) == {"mix": done[0]["output"]["channels"][0]["transcript"]}
    seg_csv = tmp_path / "segments.csv"
    out = subprocess.run([sys.executable, "-m", "emotionq.cli", "submit", str(path), "--transcript", "--language",
                          "en", "--segments", str(seg_csv)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "EMOTIONQ_API_URL": api.url, "EMOTIONQ_API_KEY": key})
    assert out.returncode == 0, out.stdout + out.stderr
    with open(seg_csv, newline="") as f:
        records = list(csv.DictReader(f))
    job = api.job(json.loads(out.stdout)["job_id"])
    assert job["options"]["transcript"] is True
    assert [(r["text"], r["language"]) for r in records] == [(s["text"], s["language"])
                                                             for s in job["output"]["segments"]]
    assert all(r["events"] == ";".join(f"{e['tag']}:{e['probability']}" for e in s["events"])
               for r, s in zip(records, job["output"]["segments"]))
