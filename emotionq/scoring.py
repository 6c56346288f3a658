"""Scoring one run: claim it, decode its audio, run the model, record the outcome.

Plain functions: the Celery task in ``emotionq.tasks`` only wires them up, and
tests call them without a broker.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from emotionq import jobs
from emotionq.blobs import BlobStore
from emotionq.errors import BadInput, EmotionQError, StoreUnavailable, TransientFault
from emotionq.inference.audio import decode
from emotionq.settings import Settings
from emotionq.store import Store

log = logging.getLogger(__name__)


def score_run(
    *,
    store: Store,
    blobs: BlobStore,
    model,
    settings: Settings,
    run_id: str,
    task_id: str,
    worker: str,
    hard_limit_s: float,
    notify: Callable[[dict, str], None] = lambda run, event: None,
) -> str:
    """Score ``run_id`` once; returns what happened ("succeeded", "failed", or why it was skipped).

    Permanent faults (bad audio) fail the run at once. Transient faults
    (TransientFault, StoreUnavailable) and anything unexpected propagate: the task
    retries the former and fails the run for the latter. ``notify(run, event)`` is
    told of job.started / job.succeeded / job.failed (for webhooks); it is told again
    when a message comes back for a finished run, in case the first telling was lost.
    """
    claim = jobs.claim(store, run_id=run_id, task_id=task_id, worker=worker,
                       max_deliveries=settings.max_deliveries, hard_limit_s=hard_limit_s)
    if not claim.go:
        log.info("run %s skipped: %s", run_id, claim.reason)
        if claim.reason in ("finished", "poison") and claim.run["state"] in ("succeeded", "failed"):
            notify(claim.run, f"job.{claim.run['state']}")
        return claim.reason
    run = claim.run
    notify(run, "job.started")  # again when redelivered: the first telling may have died with its worker
    try:
        path = blobs.path(run["sha256"])
        if not path.exists():
            raise BadInput(f"the audio blob {run['sha256']} is gone from {blobs.root}; upload it again",
                           code="audio_missing")
        started = time.perf_counter()
        samples = decode(path, max_seconds=settings.max_audio_seconds)
        decoded = time.perf_counter()
        output = model.predict(samples, window_s=settings.window_seconds, **run["options"])
        output["timing"] = {"decode_ms": round((decoded - started) * 1e3, 1),
                            "inference_ms": round((time.perf_counter() - decoded) * 1e3, 1)}
    except (TransientFault, StoreUnavailable):
        raise
    except EmotionQError as exc:
        log.log(logging.INFO if isinstance(exc, BadInput) else logging.ERROR, "run %s failed: %s", run_id, exc)
        failed = jobs.fail(store, run_id=run_id, error=exc.as_dict(), task_id=task_id)
        if failed:
            notify(failed, "job.failed")
        return "failed"
    done = jobs.complete(store, run_id=run_id, task_id=task_id, output=output, settings=settings)
    if done:
        notify(done, "job.succeeded")
    return "succeeded"
