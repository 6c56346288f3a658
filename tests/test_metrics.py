"""Prometheus metrics of the real API and worker, scraped and parsed as Prometheus would.

- The API's /metrics (no API key, not in the OpenAPI schema) counts requests by route
  template and status, times them, counts submissions by priority and dedup outcome,
  and reads the queue depth from the store when scraped.
- `emotionq worker` serves the sum of its processes' metrics (prometheus-client
  multiprocess mode): runs finished by status and code, latency, inference time,
  batch sizes; counts survive the replacement of a killed worker process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

import harness
from audio_factory import distinct_clips
from emotionq import jobs, metrics
from emotionq.store import open_store
from harness import ROOT, free_port, fresh_redis_db, running

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(300)]

METRICS_DB = 6  # its own database: the queue depth is compared with exact counts


@pytest.fixture(scope="module")
def store_url():
    return fresh_redis_db(METRICS_DB)


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir, store_url):
    with running(tmp_path_factory.mktemp("metrics"), model=tiny_model_dir, store=store_url, worker=False,
                 worker_metrics_port=free_port()) as svc:
        yield svc  # the worker starts in a test, once the backlog is queued


@pytest.fixture(scope="module")
def clips(speech_wav, tmp_path_factory):
    return distinct_clips(speech_wav, tmp_path_factory.mktemp("metrics-clips"), 5)


Samples = dict[tuple[str, frozenset], float]


def scrape(url: str) -> Samples:
    r = httpx.get(url, timeout=10)  # no API key: Prometheus has none
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def worker_metrics(service) -> Samples:
    return scrape(f"http://127.0.0.1:{service.env['EMOTIONQ_WORKER_METRICS_PORT']}/metrics")


@pytest.fixture(scope="module")
def backlog(service, clips):
    """Three low runs, one high run and one job joining the first low run, queued before any worker runs."""
    before = scrape(f"{service.url}/metrics")
    responses = [service.submit(c, priority="low") for c in clips[:3]]
    responses.append(service.submit(clips[3], priority="high"))
    responses.append(service.submit(clips[0], priority="low"))  # identical audio, still queued: joins
    assert [r.status_code for r in responses] == [202] * 5, [r.text for r in responses]
    assert responses[-1].json()["dedup"]["source"] == "coalesced"
    return {"before": before, "jobs": [r.json()["id"] for r in responses]}


def test_api_counts_requests_submissions_and_reads_queue_depth(service, backlog, store_url):
    job_id = backlog["jobs"][3]
    assert service.http.get(f"/v1/jobs/{job_id}").status_code == 200
    assert httpx.get(f"{service.url}/v1/jobs/{job_id}").status_code == 401  # no API key
    assert httpx.get(f"{service.url}/no/such/{job_id}").status_code == 404
    before, after = backlog["before"], scrape(f"{service.url}/metrics")

    requests = "emotionq_http_requests_total"
    assert moved(before, after, requests, method="POST", route="/v1/jobs", status="202") == 5
    assert moved(before, after, requests, method="GET", route="/v1/jobs/{job_id}", status="200") == 1
    assert moved(before, after, requests, method="GET", route="/v1/jobs/{job_id}", status="401") == 1
    assert moved(before, after, requests, method="GET", route="unmatched", status="404") == 1
    assert not [k for k in after if job_id in str(k)], "a raw path leaked into the labels"
    assert moved(before, after, "emotionq_http_request_duration_seconds_count", method="POST",
                 route="/v1/jobs") == 5
    submitted = "emotionq_jobs_submitted_total"
    assert moved(before, after, submitted, priority="low", outcome="new") == 3
    assert moved(before, after, submitted, priority="high", outcome="new") == 1
    assert moved(before, after, submitted, priority="low", outcome="coalesced") == 1

    depth = jobs.queue_depth(open_store(store_url))
    assert depth == {"high": 1, "low": 3}  # no worker yet
    for priority in ("high", "low"):
        assert value(after, "emotionq_queue_depth", priority=priority) == depth[priority]
    assert value(after, "emotionq_queue_limit", priority="low") == 10000

    assert "/metrics" not in service.http.get("/openapi.json").json()["paths"]


def _nan_clip(speech_wav, path):
    samples, rate = sf.read(speech_wav, dtype="float32")
    samples[1000] = np.nan  # decodes, then fails in the worker: audio_not_finite
    samples[:8] += np.random.default_rng().normal(0, 1e-3, 8).astype("float32")  # bytes no test sent before
    sf.write(path, samples, rate, subtype="FLOAT")
    return path


def test_workers_count_runs_latency_inference_and_batches(service, backlog, clips, speech_wav, tmp_path,
                                                          store_url):
    service.start_worker()
    nan = service.submit(_nan_clip(speech_wav, tmp_path / "nan.wav"))
    assert nan.status_code == 202, nan.text
    done = [service.finish(j) for j in [*backlog["jobs"], nan.json()["id"]]]
    assert [d["status"] for d in done] == ["succeeded"] * 5 + ["failed"]
    assert done[-1]["error"]["code"] == "audio_not_finite"
    api_before = scrape(f"{service.url}/metrics")
    cached = service.submit(clips[1], priority="low")
    assert cached.json()["dedup"]["source"] == "cache"
    api_after = scrape(f"{service.url}/metrics")
    assert moved(api_before, api_after, "emotionq_jobs_submitted_total", priority="low", outcome="cache") == 1
    assert value(api_after, "emotionq_queue_depth", priority="low") == 0 == jobs.queue_depth(
        open_store(store_url))["low"]

    w = worker_metrics(service)
    finished = "emotionq_runs_finished_total"
    assert value(w, finished, status="succeeded", code="", priority="low") == 3
    assert value(w, finished, status="succeeded", code="", priority="high") == 1
    assert value(w, finished, status="failed", code="audio_not_finite", priority="low") == 1
    assert value(w, "emotionq_run_latency_seconds_count", priority="low") == 4
    assert value(w, "emotionq_run_latency_seconds_count", priority="high") == 1
    [worker] = {dict(labels)["worker"] for name, labels in w if name == "emotionq_inference_seconds_count"}
    assert worker.startswith("emotionq-cpu@")
    # One model call per batch; the four runs waiting when the worker started are scored together
    # (batching is on by default), and the NaN clip never reached the model.
    calls = value(w, "emotionq_batch_size_count")
    assert value(w, "emotionq_inference_seconds_count", worker=worker) == calls
    assert value(w, "emotionq_inference_seconds_sum", worker=worker) > 0
    assert value(w, "emotionq_batch_size_sum") == 4
    assert value(w, "emotionq_batch_size_bucket", le="1.0") < calls, "no batch held more than one run"
    assert not [k for k in w if k[0].startswith("emotionq_gpu_")], "GPU gauges on a CPU worker"


def test_counts_survive_a_killed_worker_process(service, clips):
    before = worker_metrics(service)
    _, child = service.inference_worker_pids()
    os.kill(child, signal.SIGKILL)  # the pool starts a new process, which loads the model again
    assert worker_metrics(service) == before  # the dead process's counts stay in the sum
    job = service.finish(service.submit(clips[4], priority="high").json()["id"])
    assert job["status"] == "succeeded"
    after = worker_metrics(service)
    assert moved(before, after, "emotionq_runs_finished_total", status="succeeded", code="", priority="high") == 1
    assert moved(before, after, "emotionq_batch_size_count") == 1


GAUGE_SETTER = """
import sys, time
from emotionq import metrics
metrics.GPU_ALLOCATED.labels("emotionq-cuda0@test").set(float(sys.argv[1]))
print("set", flush=True)
time.sleep(120)
"""


def test_gauges_of_dead_worker_processes_leave_the_sum(tmp_path):
    """GPU memory is a live gauge: the exporter drops the value of a process that is gone, SIGKILLed too."""
    settings = harness.settings(worker_metrics_port=free_port(), worker_metrics_dir=tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_1.db").write_bytes(b"left by an earlier run")  # emptied at start
    with metrics.worker_exporter(settings) as env:
        assert not (tmp_path / "metrics" / "counter_1.db").exists()
        procs = [subprocess.Popen([sys.executable, "-c", GAUGE_SETTER, str(n)], cwd=ROOT, env={**os.environ, **env},
                                  stdout=subprocess.PIPE, text=True) for n in (1000, 2000)]
        try:
            assert [p.stdout.readline().strip() for p in procs] == ["set", "set"]
            url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
            gauge = "emotionq_gpu_memory_allocated_bytes"
            assert value(scrape(url), gauge, worker="emotionq-cuda0@test") == 3000
            procs[0].kill()
            procs[0].wait()
            assert value(scrape(url), gauge, worker="emotionq-cuda0@test") == 2000
        finally:
            for p in procs:
                p.kill()
                p.wait()
