"""The shapes of the HTTP API, for validation and the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobInput(BaseModel):
    filename: str | None
    content_type: str | None
    bytes: int
    duration_s: float
    sha256: str


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
    secrets: list[WebhookSecret]


class Job(BaseModel):
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
    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool
