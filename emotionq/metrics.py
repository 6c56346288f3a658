"""Prometheus metrics of the API and the workers: every metric emotionq exports is defined here.

The API is one process and serves its own at ``GET /metrics``, plus the queue depth
read from the store at scrape time. Workers are Celery prefork processes (a main
process per device and the child that holds the model, replaced after a crash), so
they use prometheus-client's multiprocess mode: each process writes its values to
files in ``PROMETHEUS_MULTIPROC_DIR``, and ``emotionq worker`` (the parent of them
all) serves the sum on ``EMOTIONQ_WORKER_METRICS_PORT``. Counts of a replaced
process stay in the sum; its gauges leave it.

Nothing here imports torch unless a CUDA worker asks for its memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from emotionq.errors import ConfigurationError, Unavailable
from emotionq.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # of what /metrics answers

# -- the API ----------------------------------------------------------------------

HTTP_REQUESTS = Counter("emotionq_http_requests", "HTTP requests answered, by route template and status",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("emotionq_http_request_duration_seconds", "Time to answer an HTTP request, "
                         "uploads and Prefer: wait included", ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
JOBS_SUBMITTED = Counter("emotionq_jobs_submitted", "Jobs accepted, by priority and dedup outcome: new (queued "
                         "a model run), coalesced (joined a waiting or running run), cache (reused a result), "
                         "idempotent (a retry with the same Idempotency-Key)", ["priority", "outcome"])

# -- the workers (and the API, for runs it finds abandoned by a vanished worker) ---

RUNS_FINISHED = Counter("emotionq_runs_finished", "Model runs finished, by status, error code and priority "
                        "(a run serves every identical job that joined it)", ["status", "code", "priority"])
RUN_LATENCY = Histogram("emotionq_run_latency_seconds", "From a run's creation (its first job's upload) to its end",
                        ["priority"], buckets=(0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200,
                                               21600, 86400))
INFERENCE_SECONDS = Histogram("emotionq_inference_seconds", "Model time of one model call: every window of the "
                              "runs it scored together (emotionq_batch_size)",
                              ["worker"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
BATCH_SIZE = Histogram("emotionq_batch_size", "Runs scored together in one model call",
                       buckets=(1, 2, 4, 8, 16, 32, 64))
GPU_ALLOCATED = Gauge("emotionq_gpu_memory_allocated_bytes", "CUDA memory held by tensors of the worker's "
                      "processes now (torch.cuda.memory_allocated)", ["worker"], multiprocess_mode="livesum")
GPU_MAX_ALLOCATED = Gauge("emotionq_gpu_memory_max_allocated_bytes", "Peak CUDA memory held by tensors since the "
                          "worker process started (torch.cuda.max_memory_allocated)", ["worker"],
                          multiprocess_mode="livemax")


WEBHOOK_ATTEMPTS = Counter("emotionq_webhook_attempts", "Webhook delivery attempts, by what came of them: "
                           "delivered, retry (another attempt is scheduled) or failed (no attempt is left)",
                           ["outcome"])


def observe_webhook_attempt(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(method, route).observe(seconds)


def observe_batch(size: int) -> None:
    BATCH_SIZE.observe(size)


def observe_inference(seconds: float, *, worker: str) -> None:
    INFERENCE_SECONDS.labels(worker).observe(seconds)


def run_finished(run) -> None:
    """Count a run (``emotionq.jobs.Run``) that has just ended (call once, where the store transaction that
    ended it returned it)."""
    error = run.error or {}
    RUNS_FINISHED.labels(run.state, error.get("code", ""), run.priority).inc()
    if run.finished_at and run.created_at:
        RUN_LATENCY.labels(run.priority).observe(max(0.0, run.finished_at - run.created_at))


def observe_gpu_memory(*, worker: str, device: str) -> None:
    """Record the CUDA memory of this process; nothing on CPU workers (the gauges stay absent)."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_initialized():
        return
    GPU_ALLOCATED.labels(worker).set(torch.cuda.memory_allocated(device))
    GPU_MAX_ALLOCATED.labels(worker).set(torch.cuda.max_memory_allocated(device))


# -- serving the API's metrics --------------------------------------------------------


class StoreState:
    """A collector of what the store says now, read when scraped: the runs waiting per priority and
    the workers whose model answers (absent while the store is down; the scrape still answers)."""

    def __init__(self, depth: Callable[[], dict[str, int]], limits: dict[str, int],
                 workers: Callable[[], dict[str, dict]]) -> None:
        self.depth, self.limits, self.workers = depth, limits, workers

    def collect(self):
        try:
            depth, workers = self.depth(), self.workers()
        except Unavailable as exc:
            log.warning("store state not scraped: %s", exc)
            depth = workers = None
        if depth is not None:
            gauge = GaugeMetricFamily("emotionq_queue_depth", "Runs waiting to start, per priority (the store's "
                                      "counter; uploads past the limit get 429)", labels=["priority"])
            for priority in sorted(depth):
                gauge.add_metric([priority], depth[priority])
            yield gauge
            ready = GaugeMetricFamily("emotionq_workers_ready", "Inference workers whose model answered and whose "
                                      "heartbeat is recent, per device type", labels=["device"])
            by_device: dict[str, int] = {"cpu": 0, "cuda": 0}
            for info in workers.values():
                kind = "cuda" if str(info.get("device", "")).startswith("cuda") else "cpu"
                by_device[kind] += 1
            for device, count in sorted(by_device.items()):
                ready.add_metric([device], count)
            yield ready
        limit = GaugeMetricFamily("emotionq_queue_limit", "EMOTIONQ_MAX_QUEUED_<PRIORITY>", labels=["priority"])
        for priority in sorted(self.limits):
            limit.add_metric([priority], self.limits[priority])
        yield limit


def api_exposition(state: StoreState) -> bytes:
    """The text format of what the API counts (every API process's, summed, when there are several),
    and the store's state now."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry) + generate_latest(state)
    return generate_latest(REGISTRY) + generate_latest(state)


@contextlib.contextmanager
def api_processes(count: int) -> Iterator[None]:
    """Around starting ``count`` API processes: with more than one, each writes its metrics to files in
    a fresh directory (prometheus-client's multiprocess mode) and /metrics sums them, whichever answers."""
    if count <= 1 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="emotionq-api-metrics-")
    os.environ[MULTIPROC_ENV] = directory  # before uvicorn starts the processes that import the metrics
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


# -- serving the workers' metrics -------------------------------------------------------


class _WorkerFiles:
    """The multiprocess collector, minus the gauges of processes that are gone (even SIGKILLed ones)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.inner = multiprocess.MultiProcessCollector(None, path=str(directory))

    def collect(self):
        for path in self.directory.glob("gauge_live*_*.db"):
            pid = int(path.stem.rpartition("_")[2])
            if not _alive(pid):
                multiprocess.mark_process_dead(pid, str(self.directory))
        return self.inner.collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, as another user
        pass
    return True


@contextlib.contextmanager
def worker_exporter(settings: Settings) -> Iterator[dict[str, str]]:
    """Serve the summed metrics of the worker processes started inside on EMOTIONQ_WORKER_METRICS_PORT.

    Yields the environment those processes need (``PROMETHEUS_MULTIPROC_DIR``), or nothing when the
    port is 0. The directory is emptied first: files of an earlier run would be summed in.
    """
    port = settings.worker_metrics_port
    if not port:
        yield {}
        return
    own = settings.worker_metrics_dir is None
    directory = Path(tempfile.mkdtemp(prefix="emotionq-metrics-")) if own else settings.worker_metrics_dir
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    registry = CollectorRegistry()
    registry.register(_WorkerFiles(directory))
    try:
        server, thread = start_http_server(port, addr=settings.host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve worker metrics on {settings.host}:{port} ({exc}); set "
                                 "EMOTIONQ_WORKER_METRICS_PORT to a free port, or 0 for none") from exc
    log.info("worker metrics on http://%s:%d/metrics (files in %s)", settings.host, port, directory)
    try:
        yield {MULTIPROC_ENV: str(directory)}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        if own:
            shutil.rmtree(directory, ignore_errors=True)
