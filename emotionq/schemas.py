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


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool
