"""Celery tasks: parse, call the real work in ``emotionq.scoring``, record the outcome.

The model is loaded once per worker *child* process, after the fork
(``worker_process_init``), so CUDA is never touched in the parent.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
from functools import cached_property

import httpx
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_postrun, worker_process_init, worker_process_shutdown

from emotionq import jobs, metrics, registry, scoring
from emotionq.batching import Extra, Gatherer
from emotionq.blobs import BlobStore
from emotionq.celery_app import app
from emotionq.errors import ConfigurationError, StoreUnavailable, TransientFault
from emotionq.settings import get_settings
from emotionq.store import PatientStore, open_store
from emotionq.webhooks import delivery
from emotionq.webhooks.events import DELIVER_TASK, Notifier

log = logging.getLogger(__name__)

RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0


class Runtime:
    """What one worker process holds: settings, store, blobs and (in children) the model."""

    def __init__(self) -> None:
        self.settings = get_settings()
        self.name = self.settings.worker_name or f"{self.settings.worker_device}@{socket.gethostname()}"
        self._heartbeat: threading.Timer | None = None

    @cached_property
    def store(self) -> PatientStore:
        return PatientStore(open_store(self.settings.effective_store_url), patience_s=self.settings.store_patience_s)

    @cached_property
    def blobs(self) -> BlobStore:
        return BlobStore(self.settings.effective_blob_dir)

    @cached_property
    def notifier(self) -> Notifier:
        return Notifier(store=self.store, celery=app, settings=self.settings)

    @cached_property
    def webhook_policy(self) -> delivery.Policy:
        return delivery.Policy.from_settings(self.settings)

    @cached_property
    def http(self) -> httpx.Client:
        return httpx.Client(follow_redirects=False, trust_env=False)

    def notify(self, run: dict, event: str) -> None:
        """Queue webhook events; a failure here must not undo the recorded outcome."""
        try:
            self.notifier.run_event(run, event)
        except Exception:  # broker or store down: the deliveries stay pending in the store
            log.exception("run %s: could not queue %s webhooks", run["id"], event)

    @cached_property
    def gatherer(self) -> Gatherer | None:
        """Takes more waiting jobs for a batch; None where batching is off."""
        url = self.settings.effective_broker_url
        return Gatherer(url, self.settings) if Gatherer.enabled_for(url, self.settings) else None

    @cached_property
    def model(self):
        from emotionq.inference import EmotionModel

        s = self.settings
        model = EmotionModel.load(s.model, revision=s.model_revision, device=s.worker_device,
                                  threads=s.torch_threads, runtime=s.runtime, runtime_cache_dir=s.runtime_cache_dir)
        log.info("model %s ready on %s (%s, %s: %s; untrained=%s)", model.model_id, model.device, model.dtype,
                 model.runtime, model.runtime_note, model.untrained)
        return model

    def announce(self) -> None:
        """Tell /readyz this process has a model that answered; repeat while alive."""
        m = self.model
        try:
            registry.announce(self.store.inner, name=self.name, info={
                "device": m.device, "dtype": m.dtype, "model": m.model_id, "untrained": m.untrained,
                "runtime": m.runtime, "runtime_note": m.runtime_note, "pid": os.getpid()})
        except StoreUnavailable as exc:
            log.warning("could not announce readiness: %s", exc)
        self._heartbeat = threading.Timer(registry.HEARTBEAT_S, self.announce)
        self._heartbeat.daemon = True
        self._heartbeat.start()

    def observe_gpu_memory(self) -> None:
        metrics.observe_gpu_memory(worker=self.name, device=self.settings.worker_device)

    def withdraw(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            try:
                registry.withdraw(self.store.inner, name=self.name)
            except StoreUnavailable:
                pass


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


@worker_process_init.connect
def _load_model_in_child(**_) -> None:
    global _runtime
    _runtime = Runtime()  # never reuse the parent's connections after fork
    try:
        _runtime.announce()  # loads and warms up the model first
        _runtime.observe_gpu_memory()
    except ConfigurationError as exc:
        # A worker without its model would fail every job it takes: stop the whole worker instead.
        log.critical("cannot serve: %s", exc)
        os.kill(os.getppid(), signal.SIGTERM)
        raise


@task_postrun.connect
def _observe_after_task(**_) -> None:
    if _runtime is not None:
        _runtime.observe_gpu_memory()


@worker_process_shutdown.connect
def _withdraw(**_) -> None:
    if _runtime is not None:
        _runtime.withdraw()


def backoff(retries: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2**retries))


def _fail(run_id: str, task_id: str, code: str, message: str, *, retryable: bool = False) -> None:
    rt = runtime()
    try:
        failed = jobs.fail(rt.store, run_id=run_id, task_id=task_id,
                           error={"code": code, "message": message, "retryable": retryable})
    except StoreUnavailable:
        log.error("run %s: could not record failure %s (store down); its lease will expire", run_id, code)
        return
    if failed:
        metrics.run_finished(failed)
        rt.notify(failed, "job.failed")


class InferTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # A hard time limit kills the child; this runs in the worker's main process.
        if isinstance(exc, TimeLimitExceeded):
            _fail(args[0], task_id, "time_limit",
                  f"the job ran past its hard time limit ({exc}); it is not retried")


@app.task(bind=True, base=InferTask, name="emotionq.infer", max_retries=None)
def infer(self, run_id: str, *, job_id: str | None = None, sha256: str | None = None,
          duration_s: float = 0.0, priority: str = "low") -> str:
    """Score the run ``run_id``, with the jobs waiting behind it (see ``emotionq.batching``).

    The other arguments are there for Flower and logs. A retried job runs alone.
    """
    rt = runtime()
    hard, soft = self.request.timelimit or (None, None)
    if not hard:
        soft, hard = rt.settings.time_limits(duration_s)
    extras = rt.gatherer.gather() if rt.gatherer and not self.request.retries else []
    members = [scoring.Member(run_id, self.request.id), *(scoring.Member(e.run_id, e.task_id) for e in extras)]
    try:
        outcomes = scoring.score_runs(store=rt.store, blobs=rt.blobs, model=rt.model, settings=rt.settings,
                                      members=members, worker=rt.name, hard_limit_s=hard, notify=rt.notify)
    except SoftTimeLimitExceeded:
        if not extras:
            _fail(run_id, self.request.id, "time_limit",
                  f"the job ran past its {soft:.0f} s limit for {duration_s:.0f} s of audio; it is not retried")
            return "failed"
        _release(extras)  # the batch was too slow, not necessarily this job: it tries again alone
        return _retry(self, run_id, TransientFault(f"a batch of {len(members)} jobs ran past {soft:.0f} s",
                                                   code="time_limit"))
    except (TransientFault, StoreUnavailable) as exc:
        _release(extras)
        return _retry(self, run_id, exc)
    except Exception as exc:  # a bug: fail the jobs with a reason rather than lose them
        log.exception("run %s: unexpected error", run_id)
        for member in members:
            _fail(member.run_id, member.task_id, "internal_error", f"{type(exc).__name__}: {exc}")
        _settle(extras)
        return "failed"
    _settle(extras)
    return outcomes[0] if not extras else f"{outcomes[0]} (batch of {len(members)})"


def _retry(task: Task, run_id: str, exc: TransientFault | StoreUnavailable) -> str:
    """Retry a transient fault with backoff, or fail the run once retries are spent."""
    rt = runtime()
    if task.request.retries >= rt.settings.max_retries:
        _fail(run_id, task.request.id, exc.code, f"{exc.message} (gave up after {task.request.retries} retries)",
              retryable=True)
        return "failed"
    try:
        jobs.requeue(rt.store, run_id=run_id, task_id=task.request.id)
    except StoreUnavailable:
        pass
    raise task.retry(exc=exc, countdown=backoff(task.request.retries))


def _release(extras: list[Extra]) -> None:
    """Give a batch's extra jobs back: queued again in the store, their messages back on the queue."""
    for extra in extras:
        try:
            jobs.requeue(runtime().store, run_id=extra.run_id, task_id=extra.task_id)
            extra.release()
        except Exception:  # the message comes back anyway when this process's connection drops
            log.exception("run %s: could not give it back to the queue", extra.run_id)


def _settle(extras: list[Extra]) -> None:
    """Ack a batch's extra messages: their outcomes are recorded."""
    for extra in extras:
        try:
            extra.done()
        except Exception:  # redelivered then, and skipped as finished
            log.exception("run %s: could not ack its message", extra.run_id)


@app.task(bind=True, name=DELIVER_TASK, ignore_result=True)
def deliver_webhook(self, job_id: str, event: str) -> str:
    """One attempt at one webhook delivery; queues the next attempt if one is due later."""
    rt = runtime()
    delay = delivery.attempt(rt.store, job_id=job_id, event=event, policy=rt.webhook_policy, http=rt.http)
    if delay is None:
        return "done"
    rt.notifier.enqueue(job_id, event, countdown=delay)
    return f"next attempt in {delay:.1f} s"
