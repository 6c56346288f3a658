"""Errors as HTTP problems (RFC 9457 ``application/problem+json``): the one place an error gets its status.

``STATUS`` maps each class of ``emotionq.errors`` to an HTTP status, most specific class first.
The API's handlers answer with ``response(exc)``, and the OpenAPI document's examples are real
exceptions (``EXAMPLES``) rendered by the same ``body``, so a status, its headers and its
documented example cannot drift apart.
"""

from __future__ import annotations

import math

from fastapi.responses import JSONResponse

from emotionq.errors import (
    AudioError,
    AudioTooLong,
    AudioURLError,
    BadInput,
    BlobStoreUnavailable,
    BrokerUnavailable,
    ClientGone,
    Conflict,
    EmotionQError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    NoWorkers,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    ServerFault,
    StoreUnavailable,
    Unauthorized,
    Unavailable,
)

MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_S = 5

STATUS: tuple[tuple[type[EmotionQError], int], ...] = (
    (PayloadTooLarge, 413),
    (RequestTimeout, 408),
    (AudioTooLong, 422),
    (AudioError, 422),
    (InvalidRequest, 422),
    (AudioURLError, 422),
    (BadInput, 400),
    (ClientGone, 499),  # nginx's "client closed request": nobody reads the answer, but metrics count it
    (Unauthorized, 401),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (Conflict, 409),
    (Overloaded, 429),
    (Unavailable, 503),
    (ServerFault, 500),
    (EmotionQError, 500),
)


def status_of(exc: EmotionQError) -> int:
    return next(status for cls, status in STATUS if isinstance(exc, cls))


def headers_for(exc: EmotionQError) -> dict[str, str]:
    if isinstance(exc, RateLimited):  # draft-ietf-httpapi-ratelimit-headers
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s))), "RateLimit-Policy": exc.policy,
                "RateLimit": exc.state}
    if isinstance(exc, Unavailable):
        return {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="emotionq"'}
    return {}


def body(exc: EmotionQError) -> dict:
    return {"type": f"urn:emotionq:problem:{exc.code}", "title": exc.code.replace("_", " "),
            "status": status_of(exc), "detail": exc.message, "code": exc.code, "retryable": exc.retryable}


def response(exc: EmotionQError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(exc), status_code=status_of(exc), headers={**headers_for(exc), **(headers or {})},
                        media_type=MEDIA_TYPE)


def meaning(classes: list[type[EmotionQError]]) -> str:
    """What a response status means, from the first lines of its problems' classes' docstrings."""
    lines = dict.fromkeys((cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".") for cls in classes)
    return "; ".join(lines)


# The problems the OpenAPI document shows, by example name: real exceptions, as the code raises them.
EXAMPLES: dict[str, EmotionQError] = {
    "unauthorized": Unauthorized("this API key is unknown or has been revoked"),
    "not_found": NotFound("no job 'job_5f0c2a9e8b7d4c1fa3e6b2d9c8a7f1e0'; check the id (jobs are kept for a "
                          "limited time)"),
    "idempotency_key_reused": Conflict("this Idempotency-Key was used for a different request; use a new key",
                                       code="idempotency_key_reused"),
    "job_finished": Conflict("the job has already finished; nothing to cancel", code="job_finished"),
    "no_webhook": Conflict("the job has no webhook_url", code="no_webhook"),
    "payload_too_large": PayloadTooLarge("the upload exceeds the 104,857,600-byte limit; send a shorter or "
                                         "compressed file"),
    "request_timeout": RequestTimeout("no part of the upload arrived for 30 s; the request was dropped: send it "
                                      "again on a steady connection"),
    "audio_undecodable": AudioError("the file could not be decoded as audio: upload a WAV/FLAC/MP3/OGG/M4A file",
                                    code="audio_undecodable"),
    "audio_too_long": AudioTooLong("the recording lasts 5400 s; the limit is 3600 s: split it and send the parts"),
    "invalid_form": InvalidRequest("priority: Input should be 'high' or 'low'"),
    "metadata_too_deep": InvalidRequest("metadata nests arrays and objects more than 8 levels deep; flatten it",
                                        code="metadata_too_deep"),
    "incomplete_body": InvalidRequest("the multipart body ended before its closing boundary: the upload is "
                                      "incomplete; send it again", code="incomplete_body"),
    "unknown_language": InvalidRequest("language 'fr' is not one SenseVoice knows: choose one of auto, zh, en, yue, "
                                       "ja, ko", code="unknown_language"),
    "needs_transcript": InvalidRequest("itn: for transcript=true only", code="needs_transcript"),
    "model_unavailable": InvalidRequest("transcript=true needs SenseVoice, and no live worker serves it: start a "
                                        "worker with EMOTIONQ_SENSEVOICE_MODEL set (GET /v1/models lists what is "
                                        "served)", code="model_unavailable"),
    "invalid_parameter": InvalidRequest("query.grace_seconds: Input should be greater than or equal to 0"),
    "webhook_url_refused": InvalidRequest("webhook_url resolves to 10.0.0.7, a private, loopback, link-local or "
                                          "reserved address; use a public URL (operators can allow networks with "
                                          "EMOTIONQ_WEBHOOK_ALLOW_NETWORKS)", code="webhook_url_refused"),
    "audio_url_refused": AudioURLError("audio_url resolves to 169.254.169.254, a private, loopback, link-local or "
                                       "reserved address; use a public URL (operators can allow networks with "
                                       "EMOTIONQ_AUDIO_URL_ALLOW_NETWORKS)", code="audio_url_refused"),
    "audio_url_unreachable": AudioURLError("audio_url https://recordings.example.com/c-1842.wav: no answer within "
                                           "15 s; check that the URL works, or upload the file",
                                           code="audio_url_unreachable", retryable=True),
    "blob_store_unavailable": BlobStoreUnavailable("the object store did not store the audio (EndpointConnectionError: "
                                                   "could not connect); retry shortly"),
    "rate_limited": RateLimited("client 'acme' is over its rate of 50 requests/s (bursts of 100); retry after "
                                "Retry-After seconds", retry_after_s=1, policy='"requests";q=100;w=2',
                                state='"requests";r=0;t=1'),
    "too_many_waiting": RateLimited("client 'acme' has 2000 jobs waiting, its most; retry when some have started",
                                    code="too_many_waiting", retry_after_s=10, policy='"waiting";q=2000',
                                    state='"waiting";r=0;t=10'),
    "queue_full": Overloaded("1000 high-priority jobs are waiting, the most this service queues; retry later"),
    "broker_unavailable": BrokerUnavailable("the broker did not accept the job (connection refused); retry "
                                            "shortly"),
    "store_unavailable": StoreUnavailable("Redis at 127.0.0.1:6379/0 does not answer: connection refused"),
    "no_workers": NoWorkers("no worker has a model loaded yet; start `emotionq worker`"),
}
