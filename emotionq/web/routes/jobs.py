"""``/v1/jobs``: upload audio (or name it by URL) for scoring, read a job (long-polling with ``Prefer: wait``,
or as Server-Sent Events), cancel it."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from emotionq import jobs
from emotionq.jobs.intake import JobRequest
from emotionq.settings import Settings
from emotionq.web.deps import ClientDep, JobId, PreferWait, Services, ServicesDep
from emotionq.web.fetch import fetch, read_json
from emotionq.web.form import JobForm, parse_json
from emotionq.web.openapi import LOCATION, UPLOAD_BODY, job_examples, problem_responses
from emotionq.web.responses import FastJSONResponse
from emotionq.web.schemas import JOB_CANCELED, JOB_DEDUPED, JOB_FAILED, JOB_QUEUED, JOB_SUCCEEDED, Job
from emotionq.web.stream import JobEventsResponse, job_events, resume_after
from emotionq.web.upload import receive

router = APIRouter(prefix="/v1/jobs")
SSE_EXAMPLE = ('event: queued\r\nid: 1\r\ndata: {"id": "job_5f0c…", "status": "queued", …}\r\n\r\n'
               'event: position\r\ndata: {"id": "job_5f0c…", "position": 3, "eta_s": 9.5}\r\n\r\n'
               ': ping\r\n\r\n'
               'event: running\r\nid: 2\r\ndata: {"id": "job_5f0c…", "status": "running", …}\r\n\r\n'
               'event: succeeded\r\nid: 3\r\ndata: {"id": "job_5f0c…", "status": "succeeded", …}\r\n\r\n')
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.I)
IdempotencyKey = Annotated[str | None, Header(max_length=255, examples=["upload-c-1842-attempt"],
                                              description="a retry with the same key and request returns the "
                                              "same job")]


@router.post("", status_code=202, response_model=Job, openapi_extra={"requestBody": UPLOAD_BODY}, responses={
    202: {"description": "queued, or joined an identical queued or running job", "headers": {"Location": LOCATION},
          **job_examples(queued=JOB_QUEUED)},
    200: {"model": Job, "description": "finished: a reused result (dedup.source cache), or within Prefer: wait",
          **job_examples(reused=JOB_DEDUPED, succeeded=JOB_SUCCEEDED, failed=JOB_FAILED)},
    **problem_responses("unauthorized", "rate_limited", "idempotency_key_reused", "payload_too_large", "request_timeout",
                        "audio_undecodable", "audio_too_long", "invalid_form", "metadata_too_deep", "incomplete_body",
                        "unknown_language", "needs_transcript", "model_unavailable",
                        "webhook_url_refused", "audio_url_refused", "audio_url_unreachable", "queue_full", "too_many_waiting",
                        "broker_unavailable", "store_unavailable", "blob_store_unavailable")})
async def create_job(request: Request, svc: ServicesDep, client: ClientDep,
                     idempotency_key: IdempotencyKey = None, prefer: PreferWait = None):
    """Upload audio (multipart field `file`), or name it (JSON `audio_url`), and queue it; identical audio
    reuses earlier work."""
    if request.headers.get("content-type", "").partition(";")[0].strip().lower() == "application/json":
        audio_url, form = parse_json(await read_json(request, idle_timeout_s=svc.settings.http_body_timeout_s))
        upload = await fetch(audio_url, blobs=svc.blobs, policy=svc.audio_url_policy)
    else:
        upload = await receive(request, svc.blobs, max_bytes=svc.settings.max_upload_bytes,
                               idle_timeout_s=svc.settings.http_body_timeout_s)
        try:
            form = JobForm.parse(upload.fields)
        except BaseException:
            upload.blob.abort()
            raise
    ask = JobRequest(client=client, priority=form.priority, options=form.options(), metadata=form.metadata,
                     webhook=form.webhook(), idempotency_key=idempotency_key, filename=upload.filename,
                     content_type=upload.content_type, url=upload.url)
    submission = await svc.intake.reuse(ask, upload.blob)
    if submission is not None:
        body = jobs.view(submission.job, submission.run)  # finished, without a webhook: nothing more to read
    else:
        submission, body = await run_in_threadpool(svc.accept, ask, upload.blob)
    wait = prefer_wait(prefer, svc.settings)
    if wait and body["status"] not in jobs.TERMINAL:
        job, run = await wait_for(svc, submission.job.id, client, wait)
        body = await run_in_threadpool(svc.view, job, run)
    return _answer(body, waited=wait or None)


@router.get("/{job_id}", response_model=Job, responses={
    200: job_examples(succeeded=JOB_SUCCEEDED, queued=JOB_QUEUED, failed=JOB_FAILED),
    **problem_responses("unauthorized", "rate_limited", "not_found", "invalid_parameter", "store_unavailable")})
async def get_job(job_id: JobId, svc: ServicesDep, client: ClientDep, prefer: PreferWait = None):
    """The job's status, and its output once it has succeeded."""
    wait = prefer_wait(prefer, svc.settings)
    if not wait:
        return FastJSONResponse(await run_in_threadpool(svc.read, job_id, client))
    job, run = await wait_for(svc, job_id, client, wait)
    body = await run_in_threadpool(svc.view, job, run)
    return FastJSONResponse(body, headers={"Preference-Applied": f"wait={wait:g}"})


@router.get("/{job_id}/events", response_class=JobEventsResponse, responses={
    200: {"description": "Server-Sent Events: queued (id 1), position, running (id 2), then succeeded, failed or "
          "canceled (id 3), each with the job as data; `: ping` comments meanwhile; closed after the last. "
          "Send Last-Event-ID to resume.", "content": {"text/event-stream": {
              "schema": {"type": "string"}, "example": SSE_EXAMPLE}}},
    **problem_responses("unauthorized", "rate_limited", "not_found", "invalid_parameter", "store_unavailable")})
async def job_events_stream(job_id: JobId, request: Request, svc: ServicesDep, client: ClientDep,
                            last_event_id: Annotated[str | None, Header(
                                alias="Last-Event-ID", examples=["1"],
                                description="the id of the last event received: resume after it")] = None):
    """The job's changes as they happen, pushed: the current state at once, then each change."""
    feed, s = svc.event_feed, svc.settings
    first = await feed.look(job_id, client)  # 404 now, not inside the stream
    events = job_events(lambda: feed.look(job_id, client), first, after=resume_after(last_event_id),
                        poll_s=s.events_poll_s, ping_s=s.events_ping_s, gone=request.is_disconnected)
    return JobEventsResponse(events, ping=0, send_timeout=s.events_send_timeout_s)


@router.post("/{job_id}/cancel", response_model=Job, responses={
    200: job_examples(canceled=JOB_CANCELED),
    **problem_responses("unauthorized", "rate_limited", "not_found", "job_finished", "invalid_parameter", "store_unavailable")})
async def cancel_job(job_id: JobId, svc: ServicesDep, client: ClientDep):
    """Cancel a job that has not finished: its run stops too, unless an identical job still wants it."""
    await run_in_threadpool(jobs.cancel, svc.store, job_id=job_id, client=client)
    job, run = await run_in_threadpool(svc.load, job_id, client)
    await run_in_threadpool(svc.notifier.job_event, job, run, "job.canceled")
    return await run_in_threadpool(svc.view, job, run)


def prefer_wait(prefer: str | None, settings: Settings) -> float:
    """Seconds a ``Prefer: wait=N`` header asks to wait, capped by the settings (0 without one)."""
    match = PREFER_WAIT.search(prefer or "")
    return min(float(match.group(1)), settings.max_wait_seconds) if match else 0.0


async def wait_for(svc: Services, job_id: str, client: str, seconds: float) -> tuple[jobs.Job, jobs.Run]:
    """Poll until the job is finished or ``seconds`` pass; returns the latest state."""
    deadline = time.monotonic() + seconds
    delay = 0.02
    while True:
        job, run = await run_in_threadpool(svc.load, job_id, client)
        if jobs.status_of(job, run) in jobs.TERMINAL or time.monotonic() >= deadline:
            return job, run
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)


def _answer(body: dict, *, waited: float | None) -> FastJSONResponse:
    headers = {"Location": f"/v1/jobs/{body['id']}"}
    if waited:
        headers["Preference-Applied"] = f"wait={waited:g}"
    return FastJSONResponse(body, status_code=200 if body["status"] in jobs.TERMINAL else 202, headers=headers)
