"""The shapes of the HTTP API's answers, for the OpenAPI document (with an example of each).

The upload form is ``emotionq.web.form``; problem examples are ``emotionq.web.problems.EXAMPLES``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emotionq.web import problems

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]

_SCORES = {"angry": 0.012, "disgusted": 0.004, "fearful": 0.009, "happy": 0.731, "neutral": 0.198, "other": 0.011,
           "sad": 0.018, "surprised": 0.015, "unknown": 0.002}
_ANGRY = {**_SCORES, "angry": 0.652, "happy": 0.091}
JOB_QUEUED = {
    "id": "job_5f0c2a9e8b7d4c1fa3e6b2d9c8a7f1e0", "status": "queued", "priority": "high",
    "created_at": "2026-05-04T09:30:12.481Z", "started_at": None, "finished_at": None,
    "input": {"filename": "call-1842.wav", "content_type": "audio/wav", "bytes": 1920044, "duration_s": 60.0,
              "sha256": "56d8c244463deb2bb2f421627bad7af3dab9d8278908295eb3f7fb47ce182e5c"},
    "options": {"granularity": "utterance", "embedding": False, "segmentation": "vad", "channels": "separate",
                "vad_threshold": 0.5, "min_speech_ms": 250, "min_silence_ms": 500, "speech_pad_ms": 30,
                "channel_names": ["agent", "customer"]},
    "metadata": {"call_id": "c-1842"},
    "output": None, "error": None,
    "dedup": {"reused": False, "source": None, "run_id": "run_0b1c2d3e4f5a4b6c8d9e0f1a2b3c4d5e"},
    "webhook": {"url": "https://example.com/hooks/emotionq", "events": ["job.canceled", "job.failed", "job.succeeded"],
                "deliveries": []},
    "queue": {"position": 12, "eta_s": 41.6},
}
JOB_SUCCEEDED = {
    **JOB_QUEUED, "status": "succeeded", "queue": None,
    "started_at": "2026-05-04T09:30:12.903Z", "finished_at": "2026-05-04T09:30:13.655Z",
    "output": {
        "scores": _SCORES, "top_label": "happy", "top_score": 0.731,
        "segments": [{"channel": "agent", "start": 0.42, "end": 3.9, "label": "happy", "score": 0.731,
                      "scores": _SCORES, "speaker": "agent"},
                     {"channel": "customer", "start": 4.61, "end": 9.02, "label": "angry", "score": 0.652,
                      "scores": _ANGRY, "speaker": "customer"}],
        "channels": [
            {"name": "agent", "scores": _SCORES, "top_label": "happy", "no_speech": False, "summary": {
                "speech_s": 3.48, "share": {"happy": 1.0}, "dominant_label": "happy",
                "strongest": {"happy": {"start": 0.42, "end": 3.9, "score": 0.731}}, "changes": []}},
            {"name": "customer", "scores": _ANGRY, "top_label": "angry", "no_speech": False, "summary": {
                "speech_s": 4.41, "share": {"angry": 1.0}, "dominant_label": "angry",
                "strongest": {"angry": {"start": 4.61, "end": 9.02, "score": 0.652}}, "changes": []}}],
        "no_speech": False, "segmentation": "vad", "speech_s": 7.89,
        "timeline": [{"start": 0.42, "end": 3.9, "scores": _SCORES, "top_label": "happy"},
                     {"start": 4.61, "end": 9.02, "scores": _ANGRY, "top_label": "angry"}],
        "duration_s": 60.0, "frame_rate": 50,
        "model": {"id": "iic/emotion2vec_plus_large", "revision": "v2.0.4", "device": "cuda", "dtype": "bfloat16",
                  "untrained": False},
        "speakers": [
            {"name": "agent", "channels": ["agent"], "speech_s": 3.48, "share": 0.4411, "scores": _SCORES,
             "top_label": "happy", "top_score": 0.731, "summary": {
                 "speech_s": 3.48, "share": {"happy": 1.0}, "dominant_label": "happy",
                 "strongest": {"happy": {"start": 0.42, "end": 3.9, "score": 0.731}}, "changes": []}},
            {"name": "customer", "channels": ["customer"], "speech_s": 4.41, "share": 0.5589, "scores": _ANGRY,
             "top_label": "angry", "top_score": 0.652, "summary": {
                 "speech_s": 4.41, "share": {"angry": 1.0}, "dominant_label": "angry",
                 "strongest": {"angry": {"start": 4.61, "end": 9.02, "score": 0.652}}, "changes": []}}],
        "conversation": {
            "parties_are": "channels",
            "parties": [{"name": "agent", "talk_s": 3.48, "talk_ratio": 0.4411, "turns": 1, "longest_monologue_s": 3.48,
                         "interrupted_others": 0, "was_interrupted": 0},
                        {"name": "customer", "talk_s": 4.41, "talk_ratio": 0.5589, "turns": 1,
                         "longest_monologue_s": 4.41, "interrupted_others": 0, "was_interrupted": 0}],
            "non_talk": {"over_s": 2.0, "total_s": 50.98, "longest_s": 50.98, "count": 1},
            "overlap": {"total_s": 0, "count": 0, "events": []}, "interruptions": {"count": 0, "events": []},
            "longest_monologue": {"party": "customer", "start": 4.61, "end": 9.02, "seconds": 4.41},
            "turns": [{"party": "agent", "start": 0.42, "end": 3.9, "segments": 1, "top_label": "happy",
                       "top_score": 0.731},
                      {"party": "customer", "start": 4.61, "end": 9.02, "segments": 1, "top_label": "angry",
                       "top_score": 0.652}]},
        "timing": {"decode_ms": 41.2, "inference_ms": 688.5, "vad_ms": 12.7},
    },
    "webhook": {**JOB_QUEUED["webhook"], "deliveries": [{
        "event": "job.succeeded", "id": "msg_2b7e41c0d9a84f3e9c51d7a8e6f20b14", "status": "delivered", "attempts": 1,
        "last_status": 200, "last_error": None, "next_attempt_at": None, "delivered_at": "2026-05-04T09:30:13.902Z"}]},
}
JOB_DEDUPED = {**JOB_SUCCEEDED, "id": "job_9a8b7c6d5e4f40312a1b2c3d4e5f6a7b", "started_at": "2026-05-04T11:02:40.117Z",
               "created_at": "2026-05-04T11:02:40.117Z", "finished_at": "2026-05-04T11:02:40.117Z",
               "dedup": {**JOB_SUCCEEDED["dedup"], "reused": True, "source": "cache"}, "webhook": None}
JOB_FAILED = {**JOB_QUEUED, "status": "failed", "queue": None, "started_at": "2026-05-04T09:30:12.903Z",
              "finished_at": "2026-05-04T09:30:13.010Z",
              "error": {"code": "audio_not_finite", "message": "the recording contains NaN or infinite samples: "
                        "re-export it as 16-bit PCM WAV or FLAC and upload that", "retryable": False}}
JOB_CANCELED = {**JOB_QUEUED, "status": "canceled", "queue": None, "finished_at": "2026-05-04T09:30:20.551Z"}


class JobInput(BaseModel):
    filename: str | None
    content_type: str | None
    bytes: int
    duration_s: float
    channels: int | None = Field(None, description="channels in the file's header")
    sha256: str
    url: str | None = Field(None, description="a job by URL: its audio_url, without the query string")


class JobOptions(BaseModel):
    granularity: Literal["utterance", "frame"] = "utterance"
    embedding: bool = False
    segmentation: Literal["vad", "fixed"] = Field("fixed", description="absent on jobs from before segments: fixed")
    channels: Literal["mix", "separate"] = "mix"
    vad_threshold: float | None = None
    min_speech_ms: int | None = None
    min_silence_ms: int | None = None
    speech_pad_ms: int | None = None
    channel_names: list[str] | None = None
    speakers: Literal["auto"] | int | None = Field(None, description="absent: off; auto, or the known count")
    max_speakers: int | None = Field(None, description="with speakers=auto: at most this many")
    transcript: bool | None = Field(None, description="true: SenseVoice added text, language, events and its "
                                    "emotion tag to each segment; absent otherwise")
    language: str | None = None
    itn: bool | None = None


class ServedModel(BaseModel):
    name: str = Field(examples=["sensevoice"], description="the model family (emotion2vec, sensevoice)")
    role: str = Field(description="what it answers")
    id: str = Field(examples=["iic/SenseVoiceSmall"], description="hub id or local directory")
    revision: str | None
    runtime: str | None = Field(examples=["torch"])
    device: str | None = Field(examples=["cpu"])
    untrained: bool | None = None
    workers: int = Field(description="live workers that serve it")


class ServedModels(BaseModel):
    models: list[ServedModel]


MODELS_EXAMPLE = {"models": [
    {"name": "emotion2vec", "role": "emotion", "id": "iic/emotion2vec_plus_large", "revision": "v2.0.4",
     "runtime": "torch", "device": "cuda:0", "untrained": False, "workers": 2},
    {"name": "sensevoice", "role": "transcript, language, audio events, emotion tag", "id": "iic/SenseVoiceSmall",
     "revision": None, "runtime": "torch", "device": "cuda:0", "untrained": False, "workers": 1}]}


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


class QueuePlace(BaseModel):
    position: int = Field(description="how many jobs will start before this one: every waiting high job (for a "
                          "low one), then those ahead of it as the clients take turns")
    eta_s: float | None = Field(description="about how many seconds until it is done, from recent service times "
                                "and the live workers; null until one job was measured, or with no worker live")


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
        description="scores (9 English labels summing to 1; with vad the speech-duration-weighted mean over "
                    "segments, null when no_speech), top_label, top_score, timeline (windows; with vad, the "
                    "segments), duration_s, model; with vad or channels=separate also segments [{channel, start, "
                    "end, label, score, scores}], channels [{name, scores, top_label, no_speech, summary {speech_s, "
                    "share, dominant_label, strongest, changes}}], no_speech, speech_s; with speakers (or "
                    "channels=separate) each segment's speaker, speakers [{name, channels, speech_s, share, scores, "
                    "top_label, top_score, summary}] and conversation {parties_are, parties [{name, talk_s, "
                    "talk_ratio, turns, longest_monologue_s, interrupted_others, was_interrupted}], non_talk "
                    "{over_s, total_s, longest_s, count}, overlap {total_s, count, events}, interruptions {count, "
                    "events [{at, by, of}]}, longest_monologue, turns [{party, start, end, segments, top_label, "
                    "top_score}]}; embedding, and with granularity=frame frames and frame_scores {rate, "
                    "window_s, labels, t, scores}, on request")
    error: JobError | None
    dedup: Dedup
    webhook: Webhook | None = None
    queue: QueuePlace | None = Field(None, description="while queued: where the job stands; null otherwise")


class Problem(BaseModel):
    """An error, as RFC 9457 application/problem+json; ``code`` is stable, ``detail`` says what to do next."""

    model_config = ConfigDict(json_schema_extra={"examples": [problems.body(problems.EXAMPLES["not_found"])]})

    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool = Field(description="true when the same request may succeed later (see Retry-After)")
