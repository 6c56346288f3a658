"""What the routes are handed: the services of this API process, and the client a request comes from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from emotionq import jobs
from emotionq.blobs import BlobStore
from emotionq.jobs.intake import Intake, JobRequest, PendingAudio
from emotionq.jobs.scheduler import limits, position
from emotionq.jobs.submission import Submission
from emotionq.settings import Settings
from emotionq.store import Store
from emotionq.web import keys, stream
from emotionq.web.schemas import JOB_QUEUED
from emotionq.webhooks import delivery, events, targets


@dataclass
class Services:
    """This API process's connections and policies, opened once by the app's lifespan."""

    settings: Settings
    store: Store
    blobs: BlobStore
    celery: Celery
    notifier: events.Notifier
    webhook_policy: delivery.Policy

    @cached_property
    def intake(self) -> Intake:
        return Intake(settings=self.settings, store=self.store, celery=self.celery,
                      check_webhook_url=partial(targets.check, allow=self.webhook_policy.allow),
                      job_event=self.notifier.job_event)

    @cached_property
    def event_feed(self) -> stream.Feed:
        """This process's looks at jobs for their event streams, shared by the streams of one job."""
        return stream.Feed(lambda job_id, client, held: stream.take_look(self, job_id, client, held),
                           fresh_s=self.settings.events_poll_s)

    @cached_property
    def audio_url_policy(self):
        """What jobs by URL may fetch (``emotionq.web.fetch``)."""
        from emotionq.web.fetch import Policy

        return Policy.from_settings(self.settings)

    def load(self, job_id: str, client: str) -> tuple[jobs.Job, jobs.Run]:
        """The job and its run (blocking: call in a thread)."""
        return jobs.load(self.store, job_id=job_id, client=client)

    def read(self, job_id: str, client: str) -> dict:
        """The job object as it stands (blocking: call in a thread): ``load`` and ``view`` in one trip."""
        return self.view(*self.load(job_id, client))

    def accept(self, request: JobRequest, audio: PendingAudio) -> tuple[Submission, dict]:
        """Submit the job and view it, in one trip to a thread (blocking: call in a thread)."""
        submission = self.intake.accept(request, audio)
        return submission, self.view(submission.job, submission.run)

    def view(self, job: jobs.Job, run: jobs.Run) -> dict:
        """The job object, with its webhook deliveries and, while queued, its place (blocking: call in a thread)."""
        wanted = self.settings.queue_position and not job.canceled_at
        queue = position.estimate(self.store, run) if wanted else None
        return jobs.view(job, run, delivery.for_job(self.store, job), queue)


async def services(request: Request) -> Services:
    """(A coroutine, so that FastAPI calls it on the event loop: a plain function would cost a thread's trip.)"""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]

bearer = HTTPBearer(auto_error=False, description="an API key from `emotionq keys create CLIENT`")


async def client_id(svc: ServicesDep,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The caller's client, from its API key; every job belongs to one. A client over its request rate
    is refused here (429 ``rate_limited``). On Redis the key and the client's limits are one trip on the
    event loop (a thread's trip more only where a rate is set: its bucket's transaction)."""
    token = credentials.credentials if credentials else None
    aio, settings = svc.store.aio, svc.settings
    if aio is None:
        return await run_in_threadpool(_identify, svc, token)
    if settings.auth == "disabled":
        client = keys.ANONYMOUS
        [own] = await aio.get_many([limits.limits_key(client)])
    else:
        client, own = await keys.authenticate_async(aio, token, linked=limits.LIMITS_PREFIX)
    if limits.from_doc(own, settings).rate_per_s > 0:
        await run_in_threadpool(limits.spend_token, svc.store, client, settings)
    return client


def _identify(svc: Services, token: str | None) -> str:
    """The key's client, its request counted against its rate: one trip to a thread for both."""
    client = keys.ANONYMOUS if svc.settings.auth == "disabled" else keys.authenticate(svc.store, token)
    limits.take_token(svc.store, client, svc.settings)
    return client


ClientDep = Annotated[str, Depends(client_id)]
JobId = Annotated[str, PathParam(description="the id POST /v1/jobs answered with", examples=[JOB_QUEUED["id"]])]
PreferWait = Annotated[str | None, Header(
    description="wait=N: answer once the job has finished, if that takes at most N seconds "
                "(capped by EMOTIONQ_MAX_WAIT_SECONDS); otherwise the job as it stands", examples=["wait=30"])]
