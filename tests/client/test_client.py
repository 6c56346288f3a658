"""The Python client (emotionq.client) and the `emotionq submit` / `emotionq status` commands, run as real
subprocesses against a real API and worker on RabbitMQ and Redis."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from audio_factory import distinct_clips, make_channels, make_turns
from emotionq.client import Client, problem
from emotionq.errors import APIError
from emotionq.inference.labels import LABELS
from harness import ROOT, fresh_redis_db, running

pytestmark = [pytest.mark.timeout(300), pytest.mark.rabbitmq, pytest.mark.redis]


def emotionq(service, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `emotionq` command, configured by EMOTIONQ_API_URL / EMOTIONQ_API_KEY."""
    env = {**os.environ, "EMOTIONQ_API_URL": service.url, "EMOTIONQ_API_KEY": service.key, **(env or {})}
    return subprocess.run([sys.executable, "-m", "emotionq.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)


def jsonl(out: subprocess.CompletedProcess) -> dict[str, dict]:
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return {os.path.basename(r["file"]): r for r in rows}


def test_submit_folder_waits_for_every_result_then_resumes_from_dedup(service, folder):
    started = time.monotonic()
    first = emotionq(service, "submit", str(folder), "--wait", "--format", "jsonl", "--concurrency", "3")
    first_s = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    rows = jsonl(first)
    assert sorted(rows) == ["clip-000.wav", "clip-001.wav", "clip-002.wav"]
    for row in rows.values():
        assert row["status"] == "succeeded" and row["error"] is None and row["dedup"] is None, row
        assert set(row["scores"]) == set(LABELS) and math.isclose(sum(row["scores"].values()), 1.0, abs_tol=1e-4)
        assert row["top_label"] == max(row["scores"], key=row["scores"].get)
    assert len({r["job_id"] for r in rows.values()}) == 3

    tasks = service.tasks_received()
    started = time.monotonic()
    again = emotionq(service, "submit", str(folder), "--wait", "--format", "jsonl")
    again_s = time.monotonic() - started
    assert again.returncode == 0, again.stdout + again.stderr
    repeat = jsonl(again)
    for name, row in repeat.items():
        assert row["status"] == "succeeded" and row["dedup"] == "cache", row  # the API says it reused the result
        assert row["scores"] == rows[name]["scores"] and row["job_id"] != rows[name]["job_id"]
        job = Client(service.url, service.key).job(row["job_id"])
        assert job["dedup"]["reused"] is True and job["finished_at"] == job["created_at"]  # answered at once
    assert service.tasks_received() == tasks  # nothing ran the model again
    print(f"3 files: first run {first_s:.1f} s, from dedup {again_s:.1f} s (both include ~1 s of CLI start-up)")


def test_csv_output_parses_with_a_column_per_label(service, folder, tmp_path):
    out_file = tmp_path / "results.csv"
    out = emotionq(service, "submit", str(folder), "--wait", "--format", "csv", "--output", str(out_file),
                   "--priority", "high")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == ""  # the results went to the file
    with open(out_file, newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 3
    for record in records:
        assert record["status"] == "succeeded" and record["error_code"] == "" and record["job_id"].startswith("job_")
        scores = {label: float(record[label]) for label in LABELS}
        assert math.isclose(sum(scores.values()), 1.0, abs_tol=1e-4)
        assert record["top_label"] == max(scores, key=scores.get)
        assert float(record["top_score"]) == pytest.approx(max(scores.values()))


def test_a_bad_file_is_reported_with_its_code_and_the_rest_succeed(service, folder):
    (folder / "broken.wav").write_bytes(b"this is not audio at all" * 100)
    out = emotionq(service, "submit", str(folder), "--wait")
    assert out.returncode == 1, out.stdout + out.stderr
    rows = jsonl(out)
    bad = rows.pop("broken.wav")
    assert bad["status"] == "rejected" and bad["job_id"] is None
    assert bad["error"]["code"] == "audio_undecodable" and "decoded" in bad["error"]["message"]
    assert len(rows) == 3 and all(r["status"] == "succeeded" and r["error"] is None for r in rows.values()), rows
    assert "1 of 4 files failed" in out.stderr


def test_without_wait_prints_the_accepted_jobs(service, speech_wav, tmp_path):
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    out = emotionq(service, "submit", str(clip))
    assert out.returncode == 0, out.stdout + out.stderr
    [row] = jsonl(out).values()
    assert row["status"] in ("queued", "running") and row["job_id"].startswith("job_") and row["error"] is None
    assert Client(service.url, service.key).wait(row["job_id"], timeout=120)["status"] == "succeeded"


def test_status_prints_the_job_as_json(service, speech_wav, tmp_path):
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    with Client(service.url, service.key) as client:
        job = client.wait(client.submit(clip)["id"], timeout=120)
    out = emotionq(service, "status", job["id"], "--url", service.url, "--key", service.key,
                   env={"EMOTIONQ_API_URL": "http://127.0.0.1:9", "EMOTIONQ_API_KEY": "wrong"})  # options win
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["id"] == job["id"] and printed["status"] == "succeeded" and printed["output"] == job["output"]

    missing = emotionq(service, "status", "job_nonexistent")
    assert missing.returncode == 1 and "404 not_found" in missing.stderr


def test_a_wrong_key_stops_the_whole_run_with_one_message(service, folder):
    out = emotionq(service, "submit", str(folder), env={"EMOTIONQ_API_KEY": "eq_wrong"})
    assert out.returncode == 1 and out.stderr.count("401 unauthorized") == 1, out.stderr


def test_client_submits_waits_and_reads_problems(service, speech_wav, tmp_path):
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    with Client(service.url, service.key) as client:
        job = client.submit(clip, priority="high", metadata={"call": "7"}, wait=60)
        assert job["status"] == "succeeded" and job["priority"] == "high" and job["metadata"] == {"call": "7"}
        assert client.wait(job["id"], timeout=5) == client.job(job["id"])
        with pytest.raises(APIError) as info:
            client.cancel(job["id"])
        assert (info.value.status, info.value.code) == (409, "job_finished") and "finished" in info.value.detail
        with pytest.raises(APIError) as info:
            client.submit(clip, priority="urgent")
        assert (info.value.status, info.value.code, info.value.retryable) == (422, "invalid_request", False)
    with pytest.raises(APIError) as info:
        Client(service.url).job(job["id"])
    assert (info.value.status, info.value.code) == (401, "unauthorized")


@pytest.fixture(scope="module")
def full_queue(tmp_path_factory):
    """An API alone (no worker) that queues at most one low-priority job: the second upload gets 429."""
    tmp = tmp_path_factory.mktemp("full")
    with running(tmp, model=tmp / "unused", store=fresh_redis_db(8), worker=False, max_queued_low=1) as svc:
        svc.key = svc.create_key("batch")
        yield svc


def test_429_is_retried_after_retry_after_until_accepted(full_queue, speech_wav, tmp_path):
    first, second = distinct_clips(speech_wav, tmp_path, 2)
    client = Client(full_queue.url, full_queue.key, backoff=0.1)
    waiting = client.submit(first)
    assert waiting["status"] == "queued"
    assert client.wait(waiting["id"], timeout=1.5)["status"] == "queued"  # a long poll that ran out: no worker

    with pytest.raises(APIError) as info:
        Client(full_queue.url, full_queue.key, retries=0).submit(second)
    assert (info.value.status, info.value.code, info.value.retryable) == (429, "queue_full", True)
    assert info.value.retry_after == 5.0

    threading.Timer(1.0, client.cancel, args=(waiting["id"],)).start()  # makes room while the client waits
    started = time.monotonic()
    accepted = client.submit(second)
    assert accepted["status"] == "queued" and accepted["input"]["filename"] == second.name
    assert time.monotonic() - started >= 5.0  # it waited as long as Retry-After said
    assert client.job(waiting["id"])["status"] == "canceled"


def test_retry_after_may_be_an_http_date():
    response = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
                              json={"code": "store_unavailable", "detail": "down", "retryable": True})
    error = problem(response)
    assert (error.status, error.code, error.detail, error.retry_after) == (503, "store_unavailable", "down", 0.0)
    assert problem(httpx.Response(502, text="<html>bad gateway</html>")).code == "http_502"


def test_submit_segments_writes_a_row_per_segment_of_each_channel(service, tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    make_turns(tmp_path / "agent.wav", [0.3, "Hello, this is the agent speaking.", 3.0])
    make_turns(tmp_path / "customer.wav", [2.6, "I am very angry about my bill.", 0.5])
    make_channels(calls / "call.wav", [tmp_path / "agent.wav", tmp_path / "customer.wav"])
    seg_csv, seg_jsonl = tmp_path / "segments.csv", tmp_path / "segments.jsonl"
    out = emotionq(service, "submit", str(calls), "--channels", "separate", "--channel-names", "agent,customer",
                   "--segments", str(seg_csv))
    assert out.returncode == 0, out.stdout + out.stderr
    [row] = jsonl(out).values()
    assert row["status"] == "succeeded" and "segments" not in row  # --segments implies --wait
    job = Client(service.url, service.key).job(row["job_id"])
    with open(seg_csv, newline="") as f:
        records = list(csv.DictReader(f))
    assert list(records[0]) == ["file", "channel", "speaker", "start", "end", "label", "score", *LABELS]
    segments = job["output"]["segments"]
    assert [r["channel"] for r in records] == [s["channel"] for s in segments] == ["agent", "customer"]
    assert [r["speaker"] for r in records] == [s["speaker"] for s in segments] == ["agent", "customer"]
    for record, segment in zip(records, segments):
        assert record["file"].endswith("call.wav") and record["label"] == segment["label"]
        assert (float(record["start"]), float(record["end"])) == (segment["start"], segment["end"])
        assert {k: float(record[k]) for k in LABELS} == pytest.approx(segment["scores"])
    again = emotionq(service, "submit", str(calls), "--channels", "separate", "--channel-names", "agent,customer",
                     "--segments", str(seg_jsonl))
    assert again.returncode == 0, again.stdout + again.stderr
    rows = [json.loads(line) for line in seg_jsonl.read_text().splitlines()]
    assert [(r["channel"], r["start"], r["end"], r["label"], r["scores"]) for r in rows] == [
        (s["channel"], s["start"], s["end"], s["label"], s["scores"]) for s in segments]
    bad = emotionq(service, "submit", str(calls), "--segments", str(tmp_path / "segments.txt"))
    assert bad.returncode == 2 and ".csv or a .jsonl" in bad.stderr


def test_submit_with_speakers_writes_each_segments_speaker(service, tmp_path):
    import conversations as cv

    (tmp_path / "in").mkdir()
    cv.in_turns(tmp_path / "in" / "two.wav", cv.TWO[:3])
    seg_csv = tmp_path / "segments.csv"
    out = emotionq(service, "submit", str(tmp_path / "in"), "--speakers", "2", "--segments", str(seg_csv))
    assert out.returncode == 0, out.stdout + out.stderr
    [row] = jsonl(out).values()
    job = Client(service.url, service.key).job(row["job_id"])
    assert job["options"]["speakers"] == 2
    with open(seg_csv, newline="") as f:
        records = list(csv.DictReader(f))
    assert [r["speaker"] for r in records] == [s["speaker"] for s in job["output"]["segments"]]
    assert {r["speaker"] for r in records} == {"S1", "S2"}
