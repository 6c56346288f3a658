"""The upload form of ``POST /v1/jobs``, validated by ``JobForm``, with its limits stated once (a JSON body
with ``audio_url`` takes the same options: ``parse_json``).

The ``file`` field is streamed (``emotionq.web.upload``); the OpenAPI document describes the upload
from ``JobForm`` too.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Json,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from emotionq.errors import InvalidRequest
from emotionq.jobs.models import LANGUAGES
from emotionq.vad import VadOptions
from emotionq.webhooks.events import parse_events

VAD = VadOptions()  # the detector's defaults
VAD_FIELDS = ("vad_threshold", "min_speech_ms", "min_silence_ms", "speech_pad_ms")
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MAX_METADATA_KEYS = 16
MAX_METADATA_DEPTH = 8  # nested arrays/objects; json.loads recurses, so depth is bounded before parsing
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')
MIN_SPEAKERS, MAX_SPEAKERS = 1, 10
OUR_CODES = ("metadata_too_deep", "invalid_request", "speakers_out_of_range", "speakers_need_vad",
             "max_speakers_needs_auto", "unknown_language", "needs_transcript")


def nesting(text: str) -> int:
    """How deeply JSON ``text`` nests arrays and objects (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in re.sub(r"[^\[\]{}]", "", _JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _shallow(text: Any) -> Any:
    if isinstance(text, str) and nesting(text) > MAX_METADATA_DEPTH:
        raise PydanticCustomError("metadata_too_deep", f"metadata nests arrays and objects more than "
                                  f"{MAX_METADATA_DEPTH} levels deep; flatten it")
    return text or "{}"


def _few_keys(metadata: dict) -> dict:
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"a JSON object of at most {MAX_METADATA_KEYS} keys, not {len(metadata)}")
    return metadata


Metadata = Annotated[Json[dict[str, Any]], BeforeValidator(_shallow), AfterValidator(_few_keys)]


class JobForm(BaseModel):
    """The multipart/form-data fields of ``POST /v1/jobs`` besides ``file``."""

    model_config = ConfigDict(extra="forbid", title="JobUpload")

    priority: Literal["high", "low"] = Field("low", examples=["high"],
                                             description="high starts before every low job not yet started")
    granularity: Literal["utterance", "frame"] = Field(
        "utterance", examples=["utterance"], description="frame adds per-frame features (50 per second) and frame "
        "scores (10 per second, each the model's head over 0.5 s of frames)")
    embedding: bool = Field(False, examples=[False], description="true adds the utterance embedding")
    metadata: Metadata = Field(default_factory=dict, examples=['{"call_id": "c-1842"}'],
                               description=f"a JSON object of at most {MAX_METADATA_KEYS} keys, nested at most "
                               f"{MAX_METADATA_DEPTH} deep, returned as given")
    webhook_url: str | None = Field(None, examples=["https://example.com/hooks/emotionq"],
                                    description="called when the job ends (Standard Webhooks, signed)")
    webhook_events: str = Field("", examples=["job.started"],
                                description="comma-separated extra events; job.succeeded, job.failed and "
                                "job.canceled are always sent")

    segmentation: Literal["vad", "fixed"] = Field(
        "vad", examples=["vad"], description="vad: speech segments (Silero VAD), each scored on its own, silence "
        "left out; fixed: windows of up to 30 s over the whole recording, silence included")
    vad_threshold: float = Field(VAD.threshold, ge=0.05, le=0.95, examples=[0.5],
                                 description="speech probability at which speech starts (vad only)")
    min_speech_ms: int = Field(VAD.min_speech_ms, ge=30, le=10000, examples=[250],
                               description="shorter speech is dropped (vad only)")
    min_silence_ms: int = Field(VAD.min_silence_ms, ge=30, le=10000, examples=[500],
                                description="a pause at least this long ends a segment (vad only)")
    speech_pad_ms: int = Field(VAD.speech_pad_ms, ge=0, le=1000, examples=[30],
                               description="added before and after each segment (vad only)")
    channels: Literal["mix", "separate"] = Field(
        "mix", examples=["separate"], description="mix: channels averaged to mono; separate: each channel "
        "segmented and scored on its own (a two-channel call: agent and customer)")
    channel_names: str = Field("", examples=["agent,customer"], description="comma-separated names of the "
                               "channels, one per channel, in order (separate only); default ch1, ch2, ...")
    speakers: str = Field("off", examples=["auto"], description="who spoke (vad only): off; auto (found by a "
                          f"speaker encoder and clustering); or the known count, {MIN_SPEAKERS}-{MAX_SPEAKERS}. "
                          "With channels=separate each channel is diarized on its own")
    max_speakers: int | None = Field(None, examples=[4], description=f"at most this many speakers "
                                     f"({MIN_SPEAKERS + 1}-{MAX_SPEAKERS}; speakers=auto only)")

    transcript: bool = Field(False, examples=[True], description="true adds what was said to each segment "
                             "(SenseVoice: text, language, audio events, its emotion tag) and each channel's "
                             "transcript; 422 model_unavailable when no worker serves SenseVoice")
    language: str = Field("auto", examples=["en"], description=f"the spoken language for the transcript: "
                          f"{', '.join(LANGUAGES)} (auto: detected per segment); transcript only")
    itn: bool = Field(False, examples=[True], description="inverse text normalisation of the transcript "
                      "(numbers as digits, punctuation); transcript only")

    @field_validator("priority", "granularity", "embedding", "webhook_url", "segmentation", "vad_threshold",
                     "min_speech_ms", "min_silence_ms", "speech_pad_ms", "channels", "speakers", "max_speakers",
                     "transcript", "language", "itn",
                     mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any, info) -> Any:
        """Form values are strings: trimmed, case-folded (but URLs), and an empty one is the default."""
        if not isinstance(value, str):
            return value
        value = value.strip() if info.field_name == "webhook_url" else value.strip().lower()
        return value or cls.model_fields[info.field_name].default

    @field_validator("webhook_events")
    @classmethod
    def _known_events(cls, value: str) -> str:
        try:
            parse_events(value)
        except InvalidRequest as exc:
            raise PydanticCustomError("invalid_request", exc.message) from None
        return value

    @field_validator("channel_names")
    @classmethod
    def _valid_names(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",")] if value.strip() else []
        if any(not CHANNEL_NAME.fullmatch(n) for n in names):
            raise PydanticCustomError("invalid_request", "channel_names: comma-separated names of 1 to 32 letters, "
                                      "digits, '_', '-' or '.', one per channel (e.g. agent,customer)")
        if len(set(names)) != len(names):
            raise PydanticCustomError("invalid_request", "channel_names: each channel needs a name of its own")
        return ",".join(names)

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        if value not in LANGUAGES:
            raise PydanticCustomError("unknown_language", f"language {value!r} is not one SenseVoice knows: "
                                      f"choose one of {', '.join(LANGUAGES)}")
        return value

    @field_validator("speakers")
    @classmethod
    def _speaker_count(cls, value: str) -> str:
        if value in ("off", "auto") or (value.isdigit() and MIN_SPEAKERS <= int(value) <= MAX_SPEAKERS):
            return value
        raise PydanticCustomError("speakers_out_of_range", f"speakers: off, auto or a count from {MIN_SPEAKERS} "
                                  f"to {MAX_SPEAKERS}, not {value!r}")

    @field_validator("max_speakers", mode="wrap")
    @classmethod
    def _speaker_cap(cls, value: Any, handler) -> int | None:
        try:
            value = handler(value)
        except ValidationError:
            value = -1
        if value is not None and not MIN_SPEAKERS < value <= MAX_SPEAKERS:
            raise PydanticCustomError("speakers_out_of_range", f"max_speakers: a count from {MIN_SPEAKERS + 1} "
                                      f"to {MAX_SPEAKERS}")
        return value

    @model_validator(mode="after")
    def _speakers_need_vad(self) -> JobForm:
        if self.speakers != "off" and self.segmentation != "vad":
            raise PydanticCustomError("speakers_need_vad", "speakers: diarization runs on speech segments; use "
                                      "segmentation=vad (the default) or leave speakers off")
        if self.max_speakers is not None and self.speakers != "auto":
            raise PydanticCustomError("max_speakers_needs_auto", "max_speakers caps speakers=auto; with a known "
                                      "count give speakers=N alone")
        return self

    @model_validator(mode="after")
    def _events_need_a_url(self) -> JobForm:
        if self.webhook_events.strip() and not self.webhook_url:
            raise PydanticCustomError("invalid_request", "webhook_events needs a webhook_url")
        if self.channel_names and self.channels != "separate":
            raise PydanticCustomError("invalid_request", "channel_names needs channels=separate")
        asr_set = sorted({"language", "itn"} & self.model_fields_set)
        if asr_set and not self.transcript:
            raise PydanticCustomError("needs_transcript", f"{', '.join(asr_set)}: for transcript=true only")
        vad_set = sorted(set(VAD_FIELDS) & self.model_fields_set)
        if vad_set and self.segmentation != "vad":
            raise PydanticCustomError("invalid_request", f"{', '.join(vad_set)}: for segmentation=vad only")
        return self

    @classmethod
    def parse(cls, fields: dict[str, str]) -> JobForm:
        """The validated form; InvalidRequest (with the first problem's code) otherwise."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise _invalid(exc) from None

    def options(self) -> dict:
        """The job options that are part of its dedup key (the VAD's thresholds only with vad, the names
        only with separate channels)."""
        out = {"granularity": self.granularity, "embedding": self.embedding, "segmentation": self.segmentation,
               "channels": self.channels}
        if self.segmentation == "vad":
            out.update({name: getattr(self, name) for name in VAD_FIELDS})
        if self.channel_names:
            out["channel_names"] = self.channel_names.split(",")
        if self.speakers != "off":  # absent when off, so runs from before speakers keep their dedup key
            out["speakers"] = "auto" if self.speakers == "auto" else int(self.speakers)
        if self.speakers == "auto":
            out["max_speakers"] = self.max_speakers or MAX_SPEAKERS
        if self.transcript:
            out.update(transcript=True, language=self.language, itn=self.itn)
        return out

    def webhook(self) -> dict | None:
        """The webhook as the job records it (its URL is checked against the network policy later)."""
        if not self.webhook_url:
            return None
        return {"url": self.webhook_url, "events": parse_events(self.webhook_events)}


def _invalid(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False)
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        allowed = ", ".join(["file", *JobForm.model_fields])
        return InvalidRequest(f"unknown form fields {unknown}; allowed: {allowed}")
    custom = next((e for e in errors if e["type"] in OUR_CODES), None)
    if custom is not None:
        return InvalidRequest(custom["msg"], code=custom["type"])
    return InvalidRequest("; ".join(f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in errors))


def schema_with_file() -> dict:
    """The multipart body's JSON schema for the OpenAPI document: the form's fields and ``file``."""
    schema = JobForm.model_json_schema(mode="validation")
    schema["properties"] = {"file": {
        "type": "string", "format": "binary", "description": "the recording: anything libsndfile or FFmpeg "
        "decodes (WAV, FLAC, MP3, OGG, M4A, ...); resampled to 16 kHz, its channels averaged to mono "
        "unless channels=separate"},
        **schema["properties"]}
    schema["required"] = ["file"]
    return schema


# -- jobs by URL: the same options, as a JSON body with audio_url ---------------------------------------------

MAX_JSON_BYTES = 64 * 1024


def parse_json(body: bytes) -> tuple[str, JobForm]:
    """``POST /v1/jobs`` as JSON: its ``audio_url`` and its options, validated exactly as the form's
    (``metadata`` may be an object, ``webhook_events`` and ``channel_names`` lists)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the JSON body is not UTF-8") from None
    if nesting(text) > MAX_METADATA_DEPTH + 1:
        raise InvalidRequest(f"metadata nests arrays and objects more than {MAX_METADATA_DEPTH} levels deep; "
                             "flatten it", code="metadata_too_deep")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON ({exc}); send an object with audio_url") from None
    if not isinstance(data, dict):
        raise InvalidRequest("send a JSON object with audio_url and the job's options")
    try:  # JSON's \u escapes can spell a lone surrogate, which no UTF-8 text (a URL, an answer) can hold
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"the body escapes a lone surrogate ({exc.object[exc.start:exc.end]!r}), which is "
                             "not Unicode text: send UTF-8 text") from None
    audio_url = data.pop("audio_url", None)
    if not isinstance(audio_url, str) or not audio_url.strip():
        raise InvalidRequest("send the recording's URL as audio_url (https://..., or s3://bucket/key)",
                             code="missing_audio_url")
    if "file" in data:
        raise InvalidRequest("a JSON body takes audio_url, not file: upload files as multipart/form-data")
    fields = dict(data)
    if isinstance(fields.get("metadata"), dict):
        fields["metadata"] = json.dumps(fields["metadata"])
    for name in ("webhook_events", "channel_names"):
        if isinstance(fields.get(name), list):
            fields[name] = ",".join(str(e) for e in fields[name])
    if isinstance(fields.get("speakers"), int) and not isinstance(fields["speakers"], bool):
        fields["speakers"] = str(fields["speakers"])
    return audio_url.strip(), JobForm.parse(fields)


def json_schema() -> dict:
    """The JSON body's schema for the OpenAPI document: ``audio_url`` and the form's fields."""
    schema = JobForm.model_json_schema(mode="validation")
    schema["title"] = "JobByURL"
    schema["properties"]["metadata"] = {"type": "object", "maxProperties": MAX_METADATA_KEYS,
                                        "examples": [{"call_id": "c-1842"}],
                                        "description": "a JSON object, returned as given"}
    schema["properties"] = {"audio_url": {
        "type": "string", "maxLength": 2048, "examples": ["https://recordings.example.com/c-1842.wav"],
        "description": "the recording: https:// (fetched by the API with size, duration and time limits; no "
        "private addresses, redirects checked), or s3://bucket/key of a bucket the operator allows"},
        **schema["properties"]}
    schema["required"] = ["audio_url"]
    return schema
