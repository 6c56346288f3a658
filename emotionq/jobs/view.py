"""The job object of the HTTP API, as clients see it (and webhooks carry it), with its timestamps."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from emotionq.jobs.domain import (
    CANCELED,
    FAILED,
    QUEUED,
    SUCCEEDED,
    TERMINAL,
    Job,
    Run,
    input_of,
    options_of,
    status_of,
)


def iso(ts: float | None) -> str | None:
    """A timestamp as the API shows it: ISO 8601 in UTC with a Z."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z") if ts else None


def view(job: Job, run: Run, deliveries: list[dict] | None = None, queue: dict | None = None) -> dict[str, Any]:
    """The job object of the HTTP API; ``deliveries`` are its webhook deliveries so far, ``queue`` where it
    stands while queued (``emotionq.jobs.scheduler.position``)."""
    status = status_of(job, run)
    created = job.created_at
    if job.dedup == "cache":
        started = finished = created
    else:
        started = max(run.started_at, created) if run.started_at else None
        finished = job.canceled_at or (max(run.finished_at, created) if run.finished_at else None)
    return {
        "id": job.id,
        "status": status,
        "priority": job.priority,
        "created_at": iso(created),
        "started_at": iso(started) if status != CANCELED or run.started_at else None,
        "finished_at": iso(finished) if status in TERMINAL else None,
        "input": _input(job, run),
        "options": options_of(job, run),
        "metadata": job.metadata,
        "output": run.output if status == SUCCEEDED else None,
        "error": run.error if status == FAILED else None,
        "dedup": {"reused": job.dedup is not None, "source": job.dedup, "run_id": run.id},
        "webhook": {**job.webhook, "deliveries": deliveries or []} if job.webhook else None,
        "queue": queue if status == QUEUED else None,
    }


def _input(job: Job, run: Run) -> dict[str, Any]:
    shown = input_of(job, run)
    return {**shown, "duration_s": run.decoded_duration_s or shown["duration_s"]}
