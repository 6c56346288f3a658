"""Which job gets which webhook event, and queueing its delivery on the webhooks queue.

``job.succeeded``, ``job.failed`` and ``job.canceled`` are always sent to a job
with a ``webhook_url``; ``job.started`` only on request. Every job gets its own
event, deduped and coalesced jobs included.
"""

from __future__ import annotations

import logging

from emotionq.errors import InvalidRequest
from emotionq.jobs import Job, Run, view
from emotionq.jobs.records import get_job
from emotionq.queues import DELIVER_TASK, WEBHOOK_QUEUE
from emotionq.settings import Settings
from emotionq.store import Store
from emotionq.webhooks import delivery

log = logging.getLogger(__name__)

ALWAYS = ("job.succeeded", "job.failed", "job.canceled")
OPTIONAL = ("job.started",)
MAX_HOP_S = 600.0  # a message waits at most this long in a worker (RabbitMQ's consumer_timeout is 30 min)
THIN_OUTPUT_DROPS = ("frames", "embedding")


def parse_events(spec: str) -> list[str]:
    """The events a job subscribes to: the always-sent ones plus those asked for."""
    asked = {e.strip() for e in spec.split(",") if e.strip()}
    unknown = asked - set(ALWAYS) - set(OPTIONAL)
    if unknown:
        raise InvalidRequest(f"unknown webhook_events {sorted(unknown)}; choose from "
                             f"{', '.join(OPTIONAL + ALWAYS)}")
    return sorted(asked | set(ALWAYS))


def payload_data(job: Job, run: Run) -> dict:
    """The job as a webhook carries it: without the bulky frames and embedding (GET the job for those)."""
    data = view(job, run)
    data.pop("webhook")
    if data["output"]:
        data["output"] = {k: v for k, v in data["output"].items() if k not in THIN_OUTPUT_DROPS}
    return data


class Notifier:
    """Creates delivery records and queues them; used by the API and the inference workers."""

    def __init__(self, *, store: Store, celery, settings: Settings) -> None:
        self.store, self.celery, self.settings = store, celery, settings

    def job_event(self, job: Job, run: Run, event: str) -> None:
        hook = job.webhook
        if not hook or event not in hook["events"]:
            return
        delivery.create(self.store, job=job, event=event, data=payload_data(job, run),
                        ttl=self.settings.job_ttl_seconds)
        try:
            self.enqueue(job.id, event)
        except Exception:  # broker down: the record stays pending; a redeliver request sends it
            log.exception("job %s: could not queue the %s webhook", job.id, event)

    def run_event(self, run: Run, event: str) -> None:
        """``event`` for every job still attached to ``run``."""
        for job_id in run.jobs:
            job = get_job(self.store, job_id)
            if job is not None and not job.canceled_at:
                self.job_event(job, run, event)

    def enqueue(self, job_id: str, event: str, countdown: float = 0.0) -> None:
        self.celery.send_task(DELIVER_TASK, args=[job_id, event], queue=WEBHOOK_QUEUE,
                              countdown=min(countdown, MAX_HOP_S) or None,
                              retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2})
