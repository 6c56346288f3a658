"""An upload's way in: checked, submitted, its audio filed, its run dispatched. The one function the
routes (and tests) call for a new job: ``Intake.accept``.

The audio is filed under its hash only after the store accepted the job, so a refused request
leaves nothing behind, and whatever deletes unreferenced audio sees the reference first: the
submission's transaction holds the blob and names the generation to file it under
(``emotionq.jobs.blobrefs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Protocol

from celery import Celery

from emotionq import metrics
from emotionq.errors import AudioTooLong, BlobStoreUnavailable, Unavailable
from emotionq.inference.audio import probe
from emotionq.jobs.channels import check_channels
from emotionq.jobs.domain import Job, Run
from emotionq.jobs.models import check_served, extra_models_key
from emotionq.jobs.scheduler import dispatch
from emotionq.jobs.submission import Submission, abandon_run, mark_filed, reuse, submit
from emotionq.settings import Priority, Settings
from emotionq.store import Store

log = logging.getLogger(__name__)


class PendingAudio(Protocol):
    """Received audio not yet filed (``emotionq.blobs.BlobWriter``)."""

    size: int
    sha256: str | None  # once closed
    local: bool  # nothing of it has left this host yet: closing or dropping it sends nothing

    def close(self) -> str:
        """Finish receiving (blocking: a last part may be sent on); the SHA-256."""

    def source(self) -> object: ...

    def commit(self, gen: str | None) -> bool: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class JobRequest:
    """What a client asked for, its form already validated."""

    client: str
    priority: Priority
    options: dict
    metadata: dict
    webhook: dict | None = None  # {"url", "events"}; its URL is checked against the network policy here
    idempotency_key: str | None = None
    filename: str | None = None
    content_type: str | None = None
    url: str | None = None  # a job by URL: where the audio came from (without its query string)


@dataclass
class Intake:
    """The jobs layer's way in. It tells the webhooks through callbacks, so that it imports none of them:
    ``check_webhook_url(url)`` raises where a callback URL is refused (the SSRF guard), and
    ``job_event(job, run, event)`` is told of a job finished at once (a reused result)."""

    settings: Settings
    store: Store
    celery: Celery
    check_webhook_url: Callable[[str], object]
    job_event: Callable[[Job, Run, str], None]

    @property
    def model_key(self) -> str:
        return f"{self.settings.model}@{self.settings.model_revision or 'default'}"

    def _model(self, options: dict) -> str:
        """The model part of a run's dedup key: the emotion model's, and SenseVoice's for a transcript."""
        return self.model_key + extra_models_key(self.settings, options)

    def accept(self, request: JobRequest, audio: PendingAudio) -> Submission:
        """Submit the job; its audio is filed if a run needs it, and thrown away otherwise (or on refusal)."""
        try:
            audio.close()
            check_served(self.store, request.options)
            webhook = self._webhook(request)
            duration_s, channels = self._duration(audio, request.options)
            submission = submit(
                self.store, settings=self.settings, client=request.client, priority=request.priority,
                input=_envelope(request, audio.size, audio.sha256, duration_s=round(duration_s, 3), channels=channels),
                options=request.options, metadata=request.metadata, model=self._model(request.options), webhook=webhook,
                idempotency_key=request.idempotency_key,
            )
            if submission.outcome in ("new", "coalesced"):  # the run needs the audio: file it now
                self._file(audio, submission)
            if submission.outcome == "new":  # only now may a dispatcher hand it to a worker
                submission = replace(submission, run=mark_filed(self.store, run_id=submission.run.id)
                                     or submission.run)
        finally:
            audio.abort()  # a refused upload leaves nothing behind (after commit there is nothing)
        if submission.outcome == "cache":
            self.job_event(submission.job, submission.run, "job.succeeded")
        if submission.publish:
            self._dispatch(submission)
        metrics.JOBS_SUBMITTED.labels(request.priority, submission.outcome).inc()
        return submission

    async def reuse(self, request: JobRequest, audio: PendingAudio) -> Submission | None:
        """A repeat of known audio answered on the event loop (``emotionq.jobs.submission.reuse``): no thread,
        no probe (its run's audio is the same bytes), two trips to the store. Only where the store has an
        event-loop client, the audio is still local and no webhook is asked for (its URL check and delivery
        block); None otherwise, or when it is not such a repeat: then ``accept``, in a thread."""
        aio = self.store.aio
        if aio is None or request.webhook is not None or not audio.local:
            return None
        sha256 = audio.close()
        try:
            submission = await reuse(
                aio, settings=self.settings, client=request.client, priority=request.priority, sha256=sha256,
                envelope=partial(_envelope, request, audio.size, sha256), options=request.options,
                metadata=request.metadata, model=self._model(request.options), idempotency_key=request.idempotency_key,
                check=lambda duration_s, channels: self._check(duration_s, channels, request.options))
        except BaseException:
            audio.abort()
            raise
        if submission is not None:
            audio.abort()
            metrics.JOBS_SUBMITTED.labels(request.priority, submission.outcome).inc()
        return submission

    def _webhook(self, request: JobRequest) -> dict | None:
        if request.webhook is not None:
            self.check_webhook_url(request.webhook["url"])
        return request.webhook

    def _duration(self, audio: PendingAudio, options: dict) -> tuple[float, int]:
        """The recording's duration and channel count, from its header; refused past the limits, or where
        ``channel_names`` does not name each of its channels."""
        info = probe(audio.source(), max_seconds=self.settings.max_audio_seconds)
        self._check(info.duration_s, info.channels, options)
        return info.duration_s, info.channels

    def _check(self, duration_s: float, channels: int, options: dict) -> None:
        """Refuse a recording past the duration limit, or with channels ``channel_names`` does not name."""
        limit = self.settings.max_audio_seconds
        if duration_s > limit:
            raise AudioTooLong(f"the recording lasts {duration_s:.0f} s; the limit is {limit:.0f} s: "
                               "split it and send the parts")
        if options.get("channels") == "separate":
            check_channels(channels, options, max_channels=self.settings.max_channels)

    def _file(self, audio: PendingAudio, submission: Submission) -> None:
        try:
            audio.commit(submission.run.blob)  # under the generation the store's transaction gave it
        except (OSError, BlobStoreUnavailable) as exc:
            if submission.outcome != "new":  # the run it joined has the audio of its first upload
                log.warning("job %s: could not store its copy of the audio: %s", submission.job.id, exc)
                return
            error = exc if isinstance(exc, BlobStoreUnavailable) else BlobStoreUnavailable(
                f"the audio could not be stored ({exc}); retry shortly")
            abandon_run(self.store, run_id=submission.run.id, error=error.as_dict())
            raise error from exc

    def _dispatch(self, submission: Submission) -> None:
        """Hand the broker what it may hold now (this run, or another client's whose turn it is). If the
        broker refuses, a new run is failed and the client told to retry (503), as before backlogs."""
        job, run = submission.job, submission.run
        try:
            dispatch.dispatch(self.store, self.celery, self.settings)
        except Unavailable as exc:
            if submission.outcome != "new":  # a priority raise: the run waits in the high backlog
                log.warning("job %s: could not dispatch: %s", job.id, exc)
                return
            abandon_run(self.store, run_id=run.id, error=exc.as_dict())
            raise


def _envelope(request: JobRequest, size: int, sha256: str, **audio) -> dict:
    """The job's ``input``, in the order the API shows it: the upload's name, type and size, the audio's
    duration and channels (``audio``, where known), its SHA-256, and the URL of a job by URL."""
    return {"filename": request.filename, "content_type": request.content_type, "bytes": size, **audio,
            "sha256": sha256, **({"url": request.url} if request.url else {})}
