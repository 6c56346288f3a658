"""Celery tasks: parse, call the real work in ``emotionq.worker``, record the outcome.

The model is loaded once per worker *child* process, after the fork
(``worker_process_init`` starts this process's ``WorkerProcess``), so CUDA is never
touched in the parent. The tasks are shared (``shared_task``): they join the worker's
app (``emotionq.queues.make_celery`` includes this module) when it starts, so importing
them makes no app.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_postrun, worker_process_init, worker_process_shutdown

from emotionq import jobs, metrics
from emotionq.errors import ConfigurationError, RunTimeLimit, StoreUnavailable, TransientFault
from emotionq.queues import DELIVER_TASK, INFER_TASK, INFERENCE_QUEUE
from emotionq.webhooks import delivery
from emotionq.worker import scoring
from emotionq.worker.batching import Extra
from emotionq.worker.runtime import Runtime, WorkerProcess

log = logging.getLogger(__name__)

RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0


process = WorkerProcess()  # what this process holds: its connections and its model


def runtime() -> Runtime:
    return process.runtime


@worker_process_init.connect
def _load_model_in_child(**_) -> None:
    try:
        process.start()  # new connections (never the parent's), the model loaded and warmed up, then ready
    except ConfigurationError as exc:
        # A worker without its model would fail every job it takes: stop the whole worker instead.
        log.critical("cannot serve: %s", exc)
        os.kill(os.getppid(), signal.SIGTERM)
        raise


@task_postrun.connect
def _observe_after_task(**_) -> None:
    if (rt := process.current) is not None:
        rt.observe_gpu_memory()


@worker_process_shutdown.connect
def _retire(**_) -> None:
    process.stop()


def backoff(retries: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2**retries))


def _record_failure(run_id: str, task_id: str, code: str, message: str, *, retryable: bool = False) -> None:
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
            _record_failure(args[0], task_id, "time_limit",
                  f"the job ran past its hard time limit ({exc}); it is not retried")


@shared_task(bind=True, base=InferTask, name=INFER_TASK, max_retries=None)
def infer(self, run_id: str, *, job_id: str | None = None, sha256: str | None = None,
          duration_s: float = 0.0, priority: str = "low") -> str:
    """Score the run ``run_id``, with the jobs waiting behind it (see ``emotionq.worker.batching``).

    The other arguments are there for Flower and logs. A retried job runs alone.
    """
    started = time.monotonic()
    rt = runtime()
    hard, soft = self.request.timelimit or (None, None)
    if not hard:
        soft, hard = rt.settings.time_limits(duration_s)
    queue = (self.request.delivery_info or {}).get("routing_key") or INFERENCE_QUEUE  # its extras need its models
    extras = rt.gatherer.gather(queue) if rt.gatherer and not self.request.retries else []
    members = [scoring.Member(run_id, self.request.id), *(scoring.Member(e.run_id, e.task_id) for e in extras)]
    try:
        outcomes = scoring.score_runs(store=rt.store, blobs=rt.blobs, models=rt.models.models, settings=rt.settings,
                                      members=members, worker=rt.name, hard_limit_s=hard, notify=rt.notify,
                                      started=started, on_claimed=rt.dispatch)
    except (SoftTimeLimitExceeded, RunTimeLimit) as exc:
        if not extras:
            _record_failure(run_id, self.request.id, "time_limit", exc.message if isinstance(exc, RunTimeLimit) else
                  f"the job ran past its {soft:.0f} s limit for {duration_s:.0f} s of audio; it is not retried")
            return "failed"
        _give_back(extras)  # the batch was too slow, not necessarily this job: it tries again alone
        return _retry(self, run_id, TransientFault(f"a batch of {len(members)} jobs ran past {soft:.0f} s",
                                                   code="time_limit"))
    except (TransientFault, StoreUnavailable) as exc:
        _give_back(extras)
        return _retry(self, run_id, exc)
    except Exception as exc:  # a bug: fail the jobs with a reason rather than lose them
        log.exception("run %s: unexpected error", run_id)
        for member in members:
            _record_failure(member.run_id, member.task_id, "internal_error", f"{type(exc).__name__}: {exc}")
        _ack(extras)
        return "failed"
    _ack(extras)
    return outcomes[0] if not extras else f"{outcomes[0]} (batch of {len(members)})"


def _retry(task: Task, run_id: str, exc: TransientFault | StoreUnavailable) -> str:
    """Retry a transient fault with backoff, or fail the run once retries are spent."""
    rt = runtime()
    limit = rt.settings.blob_max_retries if exc.code == "blob_store_unavailable" else rt.settings.max_retries
    if task.request.retries >= limit:  # an object-store outage is waited out longer than other faults
        _record_failure(run_id, task.request.id, exc.code, f"{exc.message} (gave up after {task.request.retries} retries)",
              retryable=True)
        return "failed"
    try:
        jobs.requeue(rt.store, run_id=run_id, task_id=task.request.id)
    except StoreUnavailable:  # the retry still runs, but its claim finds the run running: it counts a delivery
        log.warning("run %s: could not put it back to queued before retry %d", run_id, task.request.retries + 1,
                    exc_info=True)
    raise task.retry(exc=exc, countdown=backoff(task.request.retries))


def _give_back(extras: list[Extra]) -> None:
    """Give a batch's extra jobs back: queued again in the store, their messages back on the queue."""
    for extra in extras:
        try:
            jobs.requeue(runtime().store, run_id=extra.run_id, task_id=extra.task_id)
            extra.release()
        except Exception:  # the message comes back anyway when this process's connection drops
            log.exception("run %s: could not give it back to the queue", extra.run_id)


def _ack(extras: list[Extra]) -> None:
    """Ack a batch's extra messages: their outcomes are recorded."""
    for extra in extras:
        try:
            extra.done()
        except Exception:  # redelivered then, and skipped as finished
            log.exception("run %s: could not ack its message", extra.run_id)


@shared_task(bind=True, name=DELIVER_TASK, ignore_result=True)
def deliver_webhook(self, job_id: str, event: str) -> str:
    """One attempt at one webhook delivery; queues the next attempt if one is due later."""
    rt = runtime()
    delay = delivery.attempt(rt.store, job_id=job_id, event=event, policy=rt.webhook_policy, http=rt.http)
    if delay is None:
        return "done"
    rt.notifier.enqueue(job_id, event, countdown=delay)
    return f"next attempt in {delay:.1f} s"
