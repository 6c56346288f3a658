"""The HTTP API: upload, poll, cancel, health. Errors become problem+json here, and only here."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from emotionq import __version__, auth, jobs, metrics, openapi
from emotionq.blobs import BlobStore
from emotionq.dispatch import publish_run
from emotionq.errors import (
    AudioError, AudioTooLong, BadInput, BlobStoreUnavailable, BrokerUnavailable, ClientGone, Conflict, EmotionQError,
    InvalidRequest, NotFound, Overloaded, PayloadTooLarge, RequestTimeout, ServerFault, Unauthorized, Unavailable,
)
from emotionq.inference.audio import probe
from emotionq.registry import live
from emotionq.openapi import LOCATION, UPLOAD_BODY, job_examples, problem_responses
from emotionq.schemas import (
    JOB_CANCELED, JOB_DEDUPED, JOB_FAILED, JOB_QUEUED, JOB_SUCCEEDED, Job, JobOptions, WebhookSecrets,
)
from emotionq.settings import Settings, get_settings
from emotionq.store import Store, open_store
from emotionq.upload import receive
from emotionq.webhooks import delivery, events, secrets, targets

log = logging.getLogger(__name__)

FORM_FIELDS = {"priority", "granularity", "embedding", "metadata", "webhook_url", "webhook_events"}
MAX_METADATA_KEYS = 16
MAX_METADATA_DEPTH = 8  # nested arrays/objects; json.loads recurses, so depth is bounded before parsing
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.I)
RETRY_AFTER_S = 5
WEB_DIR = Path(__file__).with_name("web")  # the upload page: static files, no build step

# Every error's HTTP status, most specific class first.
HTTP_STATUS: tuple[tuple[type[EmotionQError], int], ...] = (
    (PayloadTooLarge, 413),
    (RequestTimeout, 408),
    (AudioTooLong, 422),
    (AudioError, 422),
    (InvalidRequest, 422),
    (BadInput, 400),
    (ClientGone, 499),  # nginx's "client closed request": nobody reads the answer, but metrics count it
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
    if isinstance(exc, ClientGone):
        log.info("%s %s: %s", request.method, request.url.path, exc.message)
    elif status >= 500:
        log.error("%s %s -> %d %s: %s", request.method, request.url.path, status, exc.code, exc.message)
    return problem(status, exc.code, exc.message, retryable=exc.retryable, headers=headers)


HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, a method the route lacks) as problems like all others."""
    code = HTTP_CODES.get(exc.status_code, "http_error")
    detail = {404: f"no such resource: {request.url.path}; see /docs for the API's routes",
              405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return problem(exc.status_code, code, detail, headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return problem(422, "invalid_request", detail)


class UnexpectedErrors:
    """ASGI middleware: an exception no handler took is logged once, with its traceback, and answered
    as a problem. (An ``Exception`` handler would not do: Starlette re-raises after calling it, and
    the server logs the same error a second time.)"""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if not started:  # else the answer is cut short; the client sees the connection end
                await problem(500, "internal_error", "an unexpected error occurred; it has been logged")(
                    scope, receive, send)


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

    def run_failed(self, run: dict, event: str) -> None:
        """A run that its vanished worker left, failed on reading: count it and tell the webhooks."""
        metrics.run_finished(run)
        self.notifier.run_event(run, event)


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
JobId = Annotated[str, PathParam(description="the id POST /v1/jobs answered with", examples=[JOB_QUEUED["id"]])]
PreferWait = Annotated[str | None, Header(
    description="wait=N: answer once the job has finished, if that takes at most N seconds "
                "(capped by EMOTIONQ_MAX_WAIT_SECONDS); otherwise the job as it stands", examples=["wait=30"])]


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
        if _nesting(fields["metadata"]) > MAX_METADATA_DEPTH:
            raise InvalidRequest(f"metadata nests arrays and objects more than {MAX_METADATA_DEPTH} levels deep; "
                                 "flatten it", code="metadata_too_deep")
        try:
            metadata = json.loads(fields["metadata"])
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"metadata must be a JSON object: {exc}") from exc
        if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS:
            raise InvalidRequest(f"metadata must be a JSON object of at most {MAX_METADATA_KEYS} keys")
    return priority, options, metadata


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')


def _nesting(text: str) -> int:
    """How deeply JSON ``text`` nests arrays and objects (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in re.sub(r"[^\[\]{}]", "", _JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _prefer_wait(prefer: str | None, settings: Settings) -> float:
    match = PREFER_WAIT.search(prefer or "")
    return min(float(match.group(1)), settings.max_wait_seconds) if match else 0.0


def _model_key(settings: Settings) -> str:
    return f"{settings.model}@{settings.model_revision or 'default'}"


async def _file_blob(svc: Services, upload, submission) -> None:
    """File an accepted upload under its hash (after the store has the job: a refused request files
    nothing, and whatever deletes unreferenced blobs sees the reference before the blob)."""
    try:
        await run_in_threadpool(upload.blob.commit)
    except OSError as exc:
        if submission.outcome != "new":  # the run it joined has the audio of its first upload
            log.warning("job %s: could not store its copy of the audio: %s", submission.job["id"], exc)
            return
        error = BlobStoreUnavailable(f"the audio could not be stored ({exc}); retry shortly")
        await run_in_threadpool(jobs.abandon_run, svc.store, run_id=submission.run["id"], error=error.as_dict())
        raise error from exc


async def _wait_for(svc: Services, job_id: str, client: str, seconds: float) -> tuple[dict, dict]:
    """Poll until the job is finished or ``seconds`` pass; returns the latest state."""
    deadline = time.monotonic() + seconds
    delay = 0.02
    while True:
        job, run = await run_in_threadpool(jobs.load, svc.store, job_id=job_id, client=client,
                                           on_fail=svc.run_failed)
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
    )
    openapi.install(app)
    app.add_exception_handler(EmotionQError, _emotionq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(metrics.HTTPMetrics)  # outermost: it counts the 500s UnexpectedErrors answers
    app.mount("/ui", StaticFiles(directory=WEB_DIR, html=True), name="ui")  # no API key: the page asks for one

    @app.get("/", include_in_schema=False)
    async def home():
        """The upload page (relative, so it works behind a path prefix)."""
        return RedirectResponse("ui/")

    @app.post("/v1/jobs", status_code=202, response_model=Job, openapi_extra={"requestBody": UPLOAD_BODY},
              responses={202: {"description": "queued, or joined an identical queued or running job",
                               "headers": {"Location": LOCATION}, **job_examples(queued=JOB_QUEUED)},
                         200: {"model": Job, "description": "finished: a reused result (dedup.source cache), or "
                               "within Prefer: wait", **job_examples(reused=JOB_DEDUPED, succeeded=JOB_SUCCEEDED,
                                                                    failed=JOB_FAILED)},
                         **problem_responses(
                             "unauthorized", "idempotency_key_reused", "payload_too_large", "audio_undecodable",
                             "audio_too_long", "invalid_form", "metadata_too_deep", "incomplete_body",
                             "request_timeout", "webhook_url_refused", "queue_full",
                             "broker_unavailable", "store_unavailable")})
    async def create_job(
        request: Request,
        svc: ServicesDep,
        client: ClientDep,
        idempotency_key: Annotated[str | None, Header(
            max_length=255, description="a retry with the same key and request returns the same job",
            examples=["upload-c-1842-attempt"])] = None,
        prefer: PreferWait = None,
    ):
        """Upload audio (multipart field `file`) and queue it; identical audio reuses earlier work."""
        settings = svc.settings
        upload = await receive(request, svc.blobs, max_bytes=settings.max_upload_bytes,
                               idle_timeout_s=settings.http_body_timeout_s)
        try:
            priority, options, metadata = _parse_form(upload.fields)
            webhook = await run_in_threadpool(_parse_webhook, upload.fields, svc.webhook_policy)
            info = await run_in_threadpool(probe, upload.blob.path, max_seconds=settings.max_audio_seconds)
            if info.duration_s > settings.max_audio_seconds:
                raise AudioTooLong(f"the recording lasts {info.duration_s:.0f} s; the limit is "
                                   f"{settings.max_audio_seconds:.0f} s: split it and send the parts")
            submission = await run_in_threadpool(
                jobs.submit, svc.store, settings=settings, client=client, priority=priority,
                input={"filename": upload.filename, "content_type": upload.content_type, "bytes": upload.size,
                       "duration_s": round(info.duration_s, 3), "sha256": upload.sha256},
                options=options, metadata=metadata, model=_model_key(settings), webhook=webhook,
                idempotency_key=idempotency_key,
            )
            job, run = submission.job, submission.run
            if submission.outcome in ("new", "coalesced"):  # the run needs the audio: file it now
                await _file_blob(svc, upload, submission)
        finally:
            upload.blob.abort()  # a refused upload leaves nothing behind (after commit there is nothing)
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
        metrics.JOBS_SUBMITTED.labels(priority, submission.outcome).inc()
        wait = _prefer_wait(prefer, settings)
        if wait and submission.outcome != "cache":
            job, run = await _wait_for(svc, job["id"], client, wait)
        return await _job_response(svc, job, run, waited=wait or None)

    @app.get("/v1/jobs/{job_id}", response_model=Job,
             responses={200: job_examples(succeeded=JOB_SUCCEEDED, queued=JOB_QUEUED, failed=JOB_FAILED),
                        **problem_responses("unauthorized", "not_found", "invalid_parameter", "store_unavailable")})
    async def get_job(job_id: JobId, svc: ServicesDep, client: ClientDep, prefer: PreferWait = None):
        """The job's status, and its output once it has succeeded."""
        wait = _prefer_wait(prefer, svc.settings)
        job, run = await _wait_for(svc, job_id, client, wait)
        body = await run_in_threadpool(svc.view, job, run)
        return JSONResponse(body, headers={"Preference-Applied": f"wait={wait:g}"} if wait else None)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=Job,
              responses={200: job_examples(canceled=JOB_CANCELED), **problem_responses(
                  "unauthorized", "not_found", "job_finished", "invalid_parameter", "store_unavailable")})
    async def cancel_job(job_id: JobId, svc: ServicesDep, client: ClientDep):
        """Cancel a job that has not finished; identical jobs sharing its run are not affected."""
        await run_in_threadpool(jobs.cancel, svc.store, job_id=job_id, client=client)
        job, run = await run_in_threadpool(jobs.load, svc.store, job_id=job_id, client=client)
        await run_in_threadpool(svc.notifier.job_event, job, run, "job.canceled")
        return await run_in_threadpool(svc.view, job, run)

    @app.post("/v1/jobs/{job_id}/webhook/redeliver", response_model=Job,
              responses={200: job_examples(succeeded=JOB_SUCCEEDED), **problem_responses(
                  "unauthorized", "not_found", "no_webhook", "invalid_parameter", "store_unavailable")})
    async def redeliver_webhook(job_id: JobId, svc: ServicesDep, client: ClientDep):
        """Send the job's finished webhook deliveries again, under the same webhook-id."""
        job, run = await run_in_threadpool(jobs.load, svc.store, job_id=job_id, client=client)
        if not job.get("webhook"):
            raise Conflict("the job has no webhook_url", code="no_webhook")
        reset = await run_in_threadpool(delivery.redeliver, svc.store, job_id=job_id,
                                        events=job["webhook"]["events"])
        for event in reset:
            await run_in_threadpool(svc.notifier.enqueue, job_id, event)
        return await run_in_threadpool(svc.view, job, run)

    @app.get("/v1/webhooks/secrets", response_model=WebhookSecrets,
             responses=problem_responses("unauthorized", "store_unavailable"))
    async def webhook_secrets(svc: ServicesDep, client: ClientDep):
        """The secrets that sign your webhooks now, newest first (verify against any of them)."""
        return {"secrets": await run_in_threadpool(secrets.active, svc.store, client=client)}

    @app.post("/v1/webhooks/secrets/rotate", response_model=WebhookSecrets,
              responses=problem_responses("unauthorized", "invalid_parameter", "store_unavailable"))
    async def rotate_webhook_secret(svc: ServicesDep, client: ClientDep, grace_seconds: Annotated[float | None, Query(
            ge=0, allow_inf_nan=False, description="how long the old secrets keep signing", examples=[3600])] = None):
        """A new signing secret; the old ones keep signing too for `grace_seconds` (default a day)."""
        grace = svc.settings.webhook_secret_grace_seconds if grace_seconds is None else grace_seconds
        return {"secrets": await run_in_threadpool(secrets.rotate, svc.store, client=client, grace_seconds=grace)}

    @app.get("/healthz")
    async def healthz():
        """Liveness: the API process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(svc: ServicesDep):
        """Prometheus text format, without an API key (scrapers have none): keep it off the public internet."""
        depth = metrics.QueueDepth(lambda: jobs.queue_depth(svc.store),
                                   limits={p: svc.settings.max_queued(p) for p in ("high", "low")})
        return Response(await run_in_threadpool(metrics.api_exposition, depth), media_type=metrics.CONTENT_TYPE)

    @app.get("/readyz", responses=problem_responses("no_workers", "store_unavailable", "broker_unavailable"))
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
