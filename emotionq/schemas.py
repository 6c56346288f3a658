"""The shapes of the HTTP API, for validation and the OpenAPI document (with an example of each)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]

_SCORES = {"angry": 0.012, "disgusted": 0.004, "fearful": 0.009, "happy": 0.731, "neutral": 0.198, "other": 0.011,
           "sad": 0.018, "surprised": 0.015, "unknown": 0.002}
JOB_QUEUED = {
    "id": "job_5f0c2a9e8b7d4c1fa3e6b2d9c8a7f1e0", "status": "queued", "priority": "high",
    "created_at": "2026-05-04T09:30:12.481Z", "started_at": None, "finished_at": None,
    "input": {"filename": "call-1842.wav", "content_type": "audio/wav", "bytes": 1920044, "duration_s": 60.0,
              "sha256": "56d8c244463deb2bb2f421627bad7af3dab9d8278908295eb3f7fb47ce182e5c"},
    "options": {"granularity": "utterance", "embedding": False},
    "metadata": {"call_id": "c-1842"},
    "output": None, "error": None,
    "dedup": {"reused": False, "source": None, "run_id": "run_0b1c2d3e4f5a4b6c8d9e0f1a2b3c4d5e"},
    "webhook": {"url": "https://example.com/hooks/emotionq", "events": ["job.canceled", "job.failed", "job.succeeded"],
                "deliveries": []},
}
JOB_SUCCEEDED = {
    **JOB_QUEUED, "status": "succeeded",
    "started_at": "2026-05-04T09:30:12.903Z", "finished_at": "2026-05-04T09:30:13.655Z",
    "output": {
        "scores": _SCORES, "top_label": "happy", "top_score": 0.731,
        "timeline": [{"start": 0.0, "end": 30.0, "scores": _SCORES, "top_label": "happy"},
                     {"start": 30.0, "end": 60.0, "scores": _SCORES, "top_label": "happy"}],
        "duration_s": 60.0, "frame_rate": 50,
        "model": {"id": "iic/emotion2vec_plus_large", "revision": "v2.0.4", "device": "cuda", "dtype": "bfloat16",
                  "untrained": False},
        "timing": {"decode_ms": 41.2, "inference_ms": 688.5},
    },
    "webhook": {**JOB_QUEUED["webhook"], "deliveries": [{
        "event": "job.succeeded", "id": "msg_2b7e41c0d9a84f3e9c51d7a8e6f20b14", "status": "delivered", "attempts": 1,
        "last_status": 200, "last_error": None, "next_attempt_at": None, "delivered_at": "2026-05-04T09:30:13.902Z"}]},
}
JOB_DEDUPED = {**JOB_SUCCEEDED, "id": "job_9a8b7c6d5e4f40312a1b2c3d4e5f6a7b", "started_at": "2026-05-04T11:02:40.117Z",
               "created_at": "2026-05-04T11:02:40.117Z", "finished_at": "2026-05-04T11:02:40.117Z",
               "dedup": {**JOB_SUCCEEDED["dedup"], "reused": True, "source": "cache"}, "webhook": None}
JOB_FAILED = {**JOB_QUEUED, "status": "failed", "started_at": "2026-05-04T09:30:12.903Z",
              "finished_at": "2026-05-04T09:30:13.010Z",
              "error": {"code": "audio_not_finite", "message": "the recording contains NaN or infinite samples: "
                        "re-export it as 16-bit PCM WAV or FLAC and upload that", "retryable": False}}
JOB_CANCELED = {**JOB_QUEUED, "status": "canceled", "finished_at": "2026-05-04T09:30:20.551Z"}


class JobInput(BaseModel):
    filename: str | None
    content_type: str | None
    bytes: int
    duration_s: float
    sha256: str


class JobForm(BaseModel):
    """The multipart/form-data body of ``POST /v1/jobs`` (parsed as a stream; this documents it)."""

    model_config = ConfigDict(title="JobUpload")

    file: bytes = Field(description="the recording: anything libsndfile or FFmpeg decodes (WAV, FLAC, MP3, OGG, "
                        "M4A, ...); averaged to mono and resampled to 16 kHz")
    priority: Literal["high", "low"] = Field("low", examples=["high"],
                                             description="high starts before every low job not yet started")
    granularity: Literal["utterance", "frame"] = Field("utterance", examples=["utterance"],
                                                       description="frame adds per-frame features (50 per second)")
    embedding: bool = Field(False, examples=[False], description="true adds the utterance embedding")
    metadata: str | None = Field(None, examples=['{"call_id": "c-1842"}'],
                                 description="a JSON object of at most 16 keys, returned as given")
    webhook_url: str | None = Field(None, examples=["https://example.com/hooks/emotionq"],
                                    description="called when the job ends (Standard Webhooks, signed)")
    webhook_events: str | None = Field(None, examples=["job.started"],
                                       description="comma-separated extra events; job.succeeded, job.failed and "
                                       "job.canceled are always sent")


class JobOptions(BaseModel):
    granularity: Literal["utterance", "frame"] = "utterance"
    embedding: bool = False


class JobError(BaseModel):
    code: str = Field(examples=["audio_undecodable"])
    message: str
    retryable: bool


class Dedup(BaseModel):
    reused: bool = Field(description="true when this job did not run the model itself")
    source: Literal["cache", "coalesced"] | None = Field(
        description="cache: a finished result was reused; coalesced: joined an identical queued or running job")
    run_id: str


class WebhookDelivery(BaseModel):
    event: str
    id: str = Field(description="webhook-id: the same on every attempt")
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: str | None
    delivered_at: str | None


class Webhook(BaseModel):
    url: str
    events: list[str]
    deliveries: list[WebhookDelivery]


class WebhookSecret(BaseModel):
    secret: str = Field(description="whsec_ + base64; verify with the standardwebhooks library")
    created_at: float
    expires_at: float | None


class WebhookSecrets(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"secrets": [
        {"secret": "whsec_MfKQ9r8GKYqXsiu5dQ0a3v3Xf8aO1X4bvSWnNX6JbO0=", "created_at": 1777887012.4,
         "expires_at": None},
        {"secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "created_at": 1777282212.0, "expires_at": 1777973412.4},
    ]}]})

    secrets: list[WebhookSecret]


class Job(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [JOB_SUCCEEDED]})

    id: str
    status: Status
    priority: Literal["high", "low"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    input: JobInput
    options: JobOptions
    metadata: dict[str, Any]
    output: dict[str, Any] | None = Field(
        description="scores (9 English labels summing to 1), top_label, top_score, timeline, model; "
                    "embedding and frames on request")
    error: JobError | None
    dedup: Dedup
    webhook: Webhook | None = None


class Problem(BaseModel):
    """An error, as RFC 9457 application/problem+json; ``code`` is stable, ``detail`` says what to do next."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "urn:emotionq:problem:not_found", "title": "not found", "status": 404, "code": "not_found",
        "detail": "no job 'job_0000'; check the id (jobs are kept for a limited time)", "retryable": False}]})

    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool = Field(description="true when the same request may succeed later (see Retry-After)")


def _problem(status: int, code: str, detail: str, retryable: bool = False) -> dict:
    return {"type": f"urn:emotionq:problem:{code}", "title": code.replace("_", " "), "status": status,
            "detail": detail, "code": code, "retryable": retryable}


# The problems the API answers with, by example name; ``code`` is the stable part.
PROBLEM_EXAMPLES: dict[str, dict] = {name: _problem(*args) for name, args in {
    "unauthorized": (401, "unauthorized", "this API key is unknown or has been revoked"),
    "not_found": (404, "not_found", "no job 'job_5f0c2a9e8b7d4c1fa3e6b2d9c8a7f1e0'; check the id (jobs are kept "
                  "for a limited time)"),
    "idempotency_key_reused": (409, "idempotency_key_reused", "this Idempotency-Key was used for a different "
                               "request; use a new key"),
    "job_finished": (409, "job_finished", "the job has already finished; nothing to cancel"),
    "no_webhook": (409, "no_webhook", "the job has no webhook_url"),
    "payload_too_large": (413, "payload_too_large", "the upload exceeds the 104,857,600-byte limit; send a shorter "
                          "or compressed file"),
    "audio_undecodable": (422, "audio_undecodable", "the file could not be decoded as audio: upload a "
                          "WAV/FLAC/MP3/OGG/M4A file"),
    "audio_too_long": (422, "audio_too_long", "the recording lasts 5400 s; the limit is 3600 s: split it and send "
                       "the parts"),
    "invalid_form": (422, "invalid_request", "priority must be 'high' or 'low', not 'urgent'"),
    "metadata_too_deep": (422, "metadata_too_deep", "metadata nests arrays and objects more than 8 levels deep; "
                          "flatten it"),
    "incomplete_body": (422, "incomplete_body", "the multipart body ended before its closing boundary: the upload "
                        "is incomplete; send it again"),
    "request_timeout": (408, "request_timeout", "no part of the upload arrived for 30 s; the request was dropped: "
                        "send it again on a steady connection"),
    "invalid_parameter": (422, "invalid_request", "query.grace_seconds: Input should be greater than or equal to 0"),
    "webhook_url_refused": (422, "webhook_url_refused", "webhook_url resolves to 10.0.0.7, a private, loopback, "
                            "link-local or reserved address; use a public URL (operators can allow networks with "
                            "EMOTIONQ_WEBHOOK_ALLOW_NETWORKS)"),
    "queue_full": (429, "queue_full", "1000 high-priority jobs are waiting, the most this service queues; retry "
                   "later", True),
    "broker_unavailable": (503, "broker_unavailable", "the broker did not accept the job (connection refused); "
                           "retry shortly", True),
    "store_unavailable": (503, "store_unavailable", "Redis at 127.0.0.1:6379/0 does not answer: connection refused",
                          True),
    "no_workers": (503, "no_workers", "no worker has a model loaded yet; start `emotionq worker`", True),
}.items()}
