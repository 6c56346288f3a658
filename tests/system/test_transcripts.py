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
        common = dict(broker=broker, store=store_url, batch_size=4, batch_wait_ms=20,
                      webhook_allow_networks="127.0.0.1/32")
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


def _consume(both: Service, what: str) -> None:
    """`celery control cancel_consumer|add_consumer emotion.sensevoice` for the SenseVoice worker."""
    out = both.celery("control", what, "emotion.sensevoice", "--timeout", "10", "-d", SENSEVOICE_WORKER)
    assert out.returncode == 0 and SENSEVOICE_WORKER in out.stdout, out.stdout + out.stderr


def _start_sensevoice_worker(api: Service, both: Service) -> None:
    if "worker" not in both.procs:
        both.spawn("worker", "worker")
    api.wait_until(lambda: any(m["name"] == "sensevoice" for m in api.http.get("/v1/models").json()["models"]),
                   180, "api")


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

    _start_sensevoice_worker(api, both)
    models = {m["name"]: m for m in api.http.get("/v1/models").json()["models"]}
    assert models["sensevoice"]["workers"] == 1 and models["emotion2vec"]["workers"] == 2
    assert models["sensevoice"]["id"] == str(both.env["EMOTIONQ_SENSEVOICE_MODEL"])
    assert models["sensevoice"]["untrained"] is True and models["sensevoice"]["runtime"] == "torch"
    ready = api.http.get("/readyz").json()["workers"]
    assert [m["name"] for m in ready[SENSEVOICE_WORKER]["models"]] == ["emotion2vec", "sensevoice"]

    # Several transcript jobs (each its own audio: no dedup) and plain ones: the plain worker is idle for
    # the transcripts, yet every one of them is scored by the SenseVoice worker. They wait in their queue
    # (its consumer paused) and are then scored as one batch, gathered from that queue.
    _consume(both, "cancel_consumer")
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
    _consume(both, "add_consumer")
    done = [api.finish(job_id) for job_id in ids]
    assert [j["status"] for j in done] == ["succeeded"] * 4, [j.get("error") for j in done]
    assert max(j["output"]["timing"]["batch_size"] for j in done) == 4
    for job in done:
        run = store.get(f"run:{job['dedup']['run_id']}")
        assert run["worker"] == SENSEVOICE_WORKER
        out = job["output"]
        assert job["options"]["transcript"] is True and job["options"]["language"] == "en"
        assert [set(s) >= {"text", "language", "events", "emotion_tag"} for s in out["segments"]] == [True, True]
        assert out["segments"][0]["start"] < 0.8 and out["segments"][1]["end"] * SAMPLE_RATE > SAMPLE_RATE * 4
        assert "transcript" in out["channels"][0] and out["models"]["sensevoice"]["untrained"] is True
    assert api.finish(plain_id)["status"] == "succeeded"
    again = api.submit(path.with_name("variant1.wav"), transcript="true", language="en")  # a repeat: reused
    assert (again.status_code, again.json()["dedup"]["source"]) == (200, "cache"), again.text
    assert again.json()["output"]["segments"] == done[1]["output"]["segments"]

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


def test_the_page_shows_what_was_said_under_each_box_and_events_as_marks(cluster, two_speakers):
    """The page asks for a transcript, and draws each segment's text under its box and its events on the lane."""
    import shutil

    from playwright.sync_api import sync_playwright

    api, both, _ = cluster
    _start_sensevoice_worker(api, both)
    key = api.http.headers["Authorization"].removeprefix("Bearer ")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"))
        page = browser.new_page(viewport={"width": 900, "height": 1600})
        page.goto(f"{api.url}/ui/")
        page.get_by_label("API key").fill(key)
        page.get_by_label("Transcript").select_option("en")
        page.get_by_label("Audio file").set_input_files(two_speakers[0])
        page.wait_for_selector('#job[data-status="succeeded"]', timeout=120_000)
        job_id = page.locator("#facts dt:text-is('job') + dd").inner_text()
        job = api.job(job_id)
        assert job["options"]["transcript"] is True and job["options"]["language"] == "en"
        segments = job["output"]["segments"]
        boxes, texts = page.locator("#lanes .segment"), page.locator("#lanes .segment-text")
        assert texts.count() == boxes.count() == len(segments)
        for k, s in enumerate(segments):
            assert texts.nth(k).text_content() == s["text"]
            box, text = boxes.nth(k).bounding_box(), texts.nth(k).bounding_box()
            assert abs(box["x"] - text["x"]) <= 1 and text["y"] >= box["y"] + box["height"] - 1  # under its box
        marks = page.locator("#lanes .event")
        assert marks.count() == sum(len(s["events"]) for s in segments)
        assert [marks.nth(i).get_attribute("data-tag") for i in range(marks.count())] == [
            e["tag"] for s in segments for e in s["events"]]
        browser.close()
