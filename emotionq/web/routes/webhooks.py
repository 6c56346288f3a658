"""``/v1/webhooks``: the client's signing secrets and their rotation; and a job's redelivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from emotionq.errors import Conflict
from emotionq.web.deps import ClientDep, JobId, ServicesDep
from emotionq.web.openapi import job_examples, problem_responses
from emotionq.web.schemas import JOB_SUCCEEDED, Job, WebhookSecrets
from emotionq.webhooks import delivery, secrets

router = APIRouter(prefix="/v1")
GraceSeconds = Annotated[float | None, Query(ge=0, allow_inf_nan=False, examples=[3600],
                                             description="how long the old secrets keep signing")]


@router.post("/jobs/{job_id}/webhook/redeliver", response_model=Job, responses={
    200: job_examples(succeeded=JOB_SUCCEEDED),
    **problem_responses("unauthorized", "rate_limited", "not_found", "no_webhook", "invalid_parameter", "store_unavailable")})
async def redeliver_webhook(job_id: JobId, svc: ServicesDep, client: ClientDep):
    """Send the job's finished webhook deliveries again, under the same webhook-id."""
    job, run = await run_in_threadpool(svc.load, job_id, client)
    if not job.webhook:
        raise Conflict("the job has no webhook_url", code="no_webhook")
    reset = await run_in_threadpool(delivery.redeliver, svc.store, job_id=job_id, events=job.webhook["events"])
    for event in reset:
        await run_in_threadpool(svc.notifier.enqueue, job_id, event)
    return await run_in_threadpool(svc.view, job, run)


@router.get("/webhooks/secrets", response_model=WebhookSecrets,
            responses=problem_responses("unauthorized", "rate_limited", "store_unavailable"))
async def webhook_secrets(svc: ServicesDep, client: ClientDep):
    """The secrets that sign your webhooks now, newest first (verify against any of them)."""
    return {"secrets": await run_in_threadpool(secrets.active, svc.store, client=client)}


@router.post("/webhooks/secrets/rotate", response_model=WebhookSecrets,
             responses=problem_responses("unauthorized", "rate_limited", "invalid_parameter", "store_unavailable"))
async def rotate_webhook_secret(svc: ServicesDep, client: ClientDep, grace_seconds: GraceSeconds = None):
    """A new signing secret; the old ones keep signing too for `grace_seconds` (default a day)."""
    grace = svc.settings.webhook_secret_grace_seconds if grace_seconds is None else grace_seconds
    return {"secrets": await run_in_threadpool(secrets.rotate, svc.store, client=client, grace_seconds=grace)}
