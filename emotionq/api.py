"""The HTTP API: upload, poll, cancel, health. Errors become problem+json here, and only here."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from emotionq import __version__, auth, jobs
from emotionq.blobs import BlobStore
from emotionq.dispatch import publish_run
from emotionq.errors import (
    AudioError, AudioTooLong, BadInput, BrokerUnavailable, Conflict, EmotionQError, InvalidRequest, NotFound,
    Overloaded, PayloadTooLarge, ServerFault, Unauthorized, Unavailable,
)
from emotionq.inference.audio import probe
from emotionq.registry import live
from emotionq.schemas import Job, JobOptions, Problem, WebhookSecrets
from emotionq.settings import Settings, get_settings
from emotionq.store import Store, open_store
from emotionq.upload import receive
from emotionq.webhooks import delivery, events, secrets, targets

log = logging.getLogger(__name__)

FORM_FIELDS = {"priority", "granularity", "embedding", "metadata", "webhook_url", "webhook_events"}
MAX_METADATA_KEYS = 16
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.I)
RETRY_AFTER_S = 5

# Every error's HTTP status, most specific class first.
HTTP_STATUS: tuple[tuple[type[EmotionQError], int], ...] = (
    (PayloadTooLarge, 413),
    (AudioTooLong, 422),
    (AudioError, 422),
    (InvalidRequest, 422),
    (BadInput, 400),
    (Unauthorized, 401),
    (NotFound, 404),
    (Conflict, 409),
    (Overloaded, 429),
    (Unavailable, 503),
    (ServerFault, 500),
    (EmotionQError, 500),
)


def problem(status: int, code: str, detail: str, *, retryable: bool = False,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": f"urn:emotionq:problem:{code}", "title": code.replace("_", " "), "status": status,
            "detail": detail, "code": code, "retryable": retryable}
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


async def _emotionq_error(request: Request, exc: EmotionQError) -> JSONResponse:
    status = next(code for cls, code in HTTP_STATUS if isinstance(exc, cls))
    headers = None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    elif isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="emotionq"'}
    if status >= 500:
        log.error("%s %s -> %d %s: %s", request.method, request.url.path, status, exc.code, exc.message)
    return problem(status, exc.code, exc.message, retryable=exc.retryable, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return problem(422, "invalid_request", detail)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return problem(500, "internal_error", "an unexpected error occurred; it has been logged")


@dataclass
class Services:
    settings: Settings
    store: Store
    blobs: BlobStore
    celery: Any
    notifier: events.Notifier
    webhook_policy: delivery.Policy

    def view(self, job: dict, run: dict) -> dict:
        """The job object, with its webhook deliveries (blocking: call in a thread)."""
        return jobs.view(job, run, delivery.for_job(self.store, job))


def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


bearer = HTTPBearer(auto_error=False, description="an API key from `emotionq keys create CLIENT`")


async def client_id(svc: ServicesDep,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The caller's client, from its API key; every job belongs to one."""
    if svc.settings.auth == "disabled":
        return auth.ANONYMOUS
    return await run_in_threadpool(auth.authenticate, svc.store, credentials.credentials if credentials else None)


ClientDep = Annotated[str, Depends(client_id)]


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    from emotionq.celery_app import app as celery

    store = open_store(settings.effective_store_url)
    store.purge_expired()
    notifier = events.Notifier(store=store, celery=celery, settings=settings)
    app.state.services = Services(settings, store, BlobStore(settings.effective_blob_dir), celery, notifier,
                                  delivery.Policy.from_settings(settings))
    mode = "embedded" if settings.embedded else "distributed"
    if settings.auth == "disabled":
        log.warning("EMOTIONQ_AUTH=disabled: every caller is the client %r, with no API key; for local use only",
                    auth.ANONYMOUS)
    log.info("emotionq API %s in %s mode: broker %s, store %s", __version__, mode,
             settings.effective_broker_url.split("@")[-1], settings.effective_store_url.split("@")[-1])
    yield
    store.close()


def _parse_webhook(fields: dict[str, str], policy: delivery.Policy) -> dict | None:
    url = fields.get("webhook_url", "").strip()
    if not url:
        if fields.get("webhook_events", "").strip():
            raise InvalidRequest("webhook_events needs a webhook_url")
        return None
    targets.check(url, allow=policy.allow)
    return {"url": url, "events": events.parse_events(fields.get("webhook_events", ""))}


def _parse_form(fields: dict[str, str]) -> tuple[str, dict, dict]:
    unknown = set(fields) - FORM_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown form fields {sorted(unknown)}; allowed: file, {', '.join(sorted(FORM_FIELDS))}")
    priority = fields.get("priority", "low").strip().lower() or "low"
    if priority not in ("high", "low"):
        raise InvalidRequest(f"priority must be 'high' or 'low', not {priority!r}")
    embedding = fields.get("embedding", "false").strip().lower()
    if embedding not in ("true", "false", "1", "0", ""):
        raise InvalidRequest(f"embedding must be true or false, not {embedding!r}")
    granularity = fields.get("granularity", "utterance").strip().lower() or "utterance"
    if granularity not in ("utterance", "frame"):
        raise InvalidRequest(f"granularity must be 'utterance' or 'frame', not {granularity!r}")
    options = JobOptions(granularity=granularity, embedding=embedding in ("true", "1")).model_dump()
    metadata: dict = {}
    if fields.get("metadata", "").strip():
        try:
            metadata = json.loads(fields["metadata"])
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"metadata must be a JSON object: {exc}") from exc
        if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS:
            raise InvalidRequest(f"metadata must be a JSON object of at most {MAX_METADATA_KEYS} keys")
    return priority, options, metadata


def _prefer_wait(prefer: str | None, settings: Settings) -> float:
    match = PREFER_WAIT.search(prefer or "")
    return min(float(match.group(1)), settings.max_wait_seconds) if match else 0.0


def _model_key(settings: Settings) -> str:
    return f"{settings.model}@{settings.model_revision or 'default'}"


async def _wait_for(svc: Services, job_id: str, client: str, seconds: float) -> tuple[dict, dict]:
    """Poll until the job is finished or ``seconds`` pass; returns the latest state."""
    deadline = time.monotonic() + seconds
    delay = 0.02
    while True:
        job, run = await run_in_threadpool(jobs.load, svc.store, job_id=job_id, client=client,
                                           on_fail=svc.notifier.run_event)
        if jobs.status_of(job, run) in jobs.TERMINAL or time.monotonic() >= deadline:
            return job, run
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)


async def _job_response(svc: Services, job: dict, run: dict, *, waited: float | None = None) -> JSONResponse:
    body = await run_in_threadpool(svc.view, job, run)
    finished = body["status"] in jobs.TERMINAL
    headers = {"Location": f"/v1/jobs/{job['id']}"}
    if waited:
        headers["Preference-Applied"] = f"wait={waited:g}"
    return JSONResponse(body, status_code=200 if finished else 202, headers=headers)


def create_app() -> FastAPI:
    app = FastAPI(
        title="emotionq", version=__version__, lifespan=lifespan,
        description="Speech emotion recognition (emotion2vec) as a queued service.",
        responses={422: {"model": Problem}, 503: {"model": Problem}},
    )
    app.add_exception_handler(EmotionQError, _emotionq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)

    @app.post("/v1/jobs", status_code=202, response_model=Job,
              responses={200: {"model": Job, "description": "finished within Prefer: wait"},
                         401: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem},
                         429: {"model": Problem}})
    async def create_job(
        request: Request,
        svc: ServicesDep,
        client: ClientDep,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
        prefer: Annotated[str | None, Header()] = None,
    ):
        """Upload audio (multipart field `file`) and queue it; identical audio reuses earlier work."""
        settings = svc.settings
        upload = await receive(request, svc.blobs, max_bytes=settings.max_upload_bytes)
        priority, options, metadata = _parse_form(upload.fields)
        webhook = await run_in_threadpool(_parse_webhook, upload.fields, svc.webhook_policy)
        path = svc.blobs.path(upload.sha256)
        try:
            info = await run_in_threadpool(probe, path)
            if info.duration_s > settings.max_audio_seconds:
                raise AudioTooLong(f"the recording lasts {info.duration_s:.0f} s; the limit is "
                                   f"{settings.max_audio_seconds:.0f} s: split it and send the parts")
        except (BadInput, FileNotFoundError) as exc:
            path.unlink(missing_ok=True)  # these bytes can never be accepted, so no job uses them
            if isinstance(exc, BadInput):
                raise
            raise AudioError("the upload could not be read back; retry") from exc
        submission = await run_in_threadpool(
            jobs.submit, svc.store, settings=settings, client=client, priority=priority,
            input={"filename": upload.filename, "content_type": upload.content_type, "bytes": upload.size,
                   "duration_s": round(info.duration_s, 3), "sha256": upload.sha256},
            options=options, metadata=metadata, model=_model_key(settings), webhook=webhook,
            idempotency_key=idempotency_key,
        )
        job, run = submission.job, submission.run
        if submission.outcome == "cache":
            await run_in_threadpool(svc.notifier.job_event, job, run, "job.succeeded")
        if submission.publish:
            try:
                await run_in_threadpool(publish_run, svc.celery, run, settings=settings, job_id=job["id"])
            except Unavailable as exc:
                if submission.outcome != "new":  # a priority raise (or an orphan: the next joiner retries)
                    log.warning("job %s: could not republish run %s: %s", job["id"], run["id"], exc)
                else:
                    await run_in_threadpool(jobs.abandon_run, svc.store, run_id=run["id"], error=exc.as_dict())
                    raise
            else:
                try:
                    await run_in_threadpool(jobs.mark_published, svc.store, run_id=run["id"])
                except Unavailable as exc:  # the message is out; at worst a joiner publishes it again
                    log.warning("run %s: could not record its publication: %s", run["id"], exc)
        wait = _prefer_wait(prefer, settings)
        if wait and submission.outcome != "cache":
            job, run = await _wait_for(svc, job["id"], client, wait)
        return await _job_response(svc, job, run, waited=wait or None)

    @app.get("/v1/jobs/{job_id}", response_model=Job, responses={401: {"model": Problem}, 404: {"model": Problem}})
    async def get_job(job_id: str, svc: ServicesDep, client: ClientDep,
                      prefer: Annotated[str | None, Header()] = None):
        """The job's status, and its output once it has succeeded."""
        wait = _prefer_wait(prefer, svc.settings)
        job, run = await _wait_for(svc, job_id, client, wait)
        body = await run_in_threadpool(svc.view, job, run)
        return JSONResponse(body, headers={"Preference-Applied": f"wait={wait:g}"} if wait else None)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=Job,
              responses={401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}})
    async def cancel_job(job_id: str, svc: ServicesDep, client: ClientDep):
        """Cancel a job that has not finished; identical jobs sharing its run are not affected."""
        await run_in_threadpool(jobs.cancel, svc.store, job_id=job_id, client=client)
        job, run = await run_in_threadpool(jobs.load, svc.store, job_id=job_id, client=client)
        await run_in_threadpool(svc.notifier.job_event, job, run, "job.canceled")
        return await run_in_threadpool(svc.view, job, run)

    @app.post("/v1/jobs/{job_id}/webhook/redeliver", response_model=Job,
              responses={401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}})
    async def redeliver_webhook(job_id: str, svc: ServicesDep, client: ClientDep):
        """Send the job's finished webhook deliveries again, under the same webhook-id."""
        job, run = await run_in_threadpool(jobs.load, svc.store, job_id=job_id, client=client)
        if not job.get("webhook"):
            raise Conflict("the job has no webhook_url", code="no_webhook")
        reset = await run_in_threadpool(delivery.redeliver, svc.store, job_id=job_id,
                                        events=job["webhook"]["events"])
        for event in reset:
            await run_in_threadpool(svc.notifier.enqueue, job_id, event)
        return await run_in_threadpool(svc.view, job, run)

    @app.get("/v1/webhooks/secrets", response_model=WebhookSecrets, responses={401: {"model": Problem}})
    async def webhook_secrets(svc: ServicesDep, client: ClientDep):
        """The secrets that sign your webhooks now, newest first (verify against any of them)."""
        return {"secrets": await run_in_threadpool(secrets.active, svc.store, client=client)}

    @app.post("/v1/webhooks/secrets/rotate", response_model=WebhookSecrets, responses={401: {"model": Problem}})
    async def rotate_webhook_secret(svc: ServicesDep, client: ClientDep, grace_seconds: float | None = None):
        """A new signing secret; the old ones keep signing too for `grace_seconds` (default a day)."""
        grace = svc.settings.webhook_secret_grace_seconds if grace_seconds is None else grace_seconds
        if grace < 0:
            raise InvalidRequest("grace_seconds must be 0 or more")
        return {"secrets": await run_in_threadpool(secrets.rotate, svc.store, client=client, grace_seconds=grace)}

    @app.get("/healthz")
    async def healthz():
        """Liveness: the API process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", responses={503: {"model": Problem}})
    async def readyz(svc: ServicesDep):
        """Readiness: store and broker answer, and at least one worker has a model that answered."""
        await run_in_threadpool(svc.store.ping)
        await run_in_threadpool(_ping_broker, svc.celery)
        workers = await run_in_threadpool(live, svc.store)
        if not workers:
            return problem(503, "no_workers", "no worker has a model loaded yet; start `emotionq worker`",
                           retryable=True, headers={"Retry-After": str(RETRY_AFTER_S)})
        return {"status": "ready", "mode": "embedded" if svc.settings.embedded else "distributed",
                "workers": workers}

    return app


def _ping_broker(celery) -> None:
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # kombu raises many kinds here; all mean "not reachable"
        raise BrokerUnavailable(f"the broker does not answer: {exc}") from exc
