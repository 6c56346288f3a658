"""Publishing runs to the broker, with confirms, by task name (so the API never imports the model)."""

from __future__ import annotations

import logging
import time

import amqp.exceptions
from celery import Celery
from kombu.exceptions import KombuError

from emotionq.errors import BrokerUnavailable
from emotionq.queues import INFERENCE_QUEUE, message_priority
from emotionq.settings import Settings

log = logging.getLogger(__name__)

INFER_TASK = "emotionq.infer"
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


def publish_run(celery: Celery, run: dict, *, settings: Settings, job_id: str) -> str:
    """Queue one run at its priority; returns the task id. Raises BrokerUnavailable if not confirmed."""
    soft, hard = settings.time_limits(run["duration_s"])
    started = time.perf_counter()
    try:
        result = celery.send_task(
            INFER_TASK,
            args=[run["id"]],
            kwargs={"job_id": job_id, "sha256": run["sha256"], "duration_s": round(run["duration_s"], 3),
                    "priority": run["priority"]},
            queue=INFERENCE_QUEUE,
            priority=message_priority(run["priority"]),
            soft_time_limit=soft,
            time_limit=hard,
            retry=True,
            retry_policy=PUBLISH_RETRY,
        )
    except (KombuError, amqp.exceptions.AMQPError, OSError) as exc:
        log.warning("publish of %s failed after %.3fs: %s", run["id"], time.perf_counter() - started, exc)
        raise BrokerUnavailable(f"the broker did not accept the job ({exc}); retry shortly") from exc
    return result.id
