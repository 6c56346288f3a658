"""Errors of emotionq, split by what the caller can do about them.

EmotionQError                 root; ``code`` is stable, ``retryable`` says whether a retry may help
├── BadInput                  the request or the audio is wrong: fix it, do not retry
│   ├── InvalidRequest        a form field, header or parameter is malformed
│   ├── PayloadTooLarge       the upload exceeds the byte limit
│   ├── RequestTimeout        the client stopped sending its request body part-way
│   ├── AudioTooLong          the recording exceeds the duration limit
│   ├── AudioURLError         an audio_url could not be fetched: refused (SSRF guard), unreachable
│   └── AudioError            the bytes are not usable audio: undecodable, empty, too short,
│                             non-finite or absurdly loud samples (``code`` says which)
├── ClientGone                the client closed the connection before its request was read
├── Unauthorized              no API key, or one that is unknown or revoked
├── NotFound                  no such job (or not yours), or no such route
├── MethodNotAllowed          the route exists, but not with this method
├── Conflict                  the request clashes with the state of the job or an earlier request
├── Unavailable               a dependency (broker, store) is down or full: retry later
│   ├── Overloaded            the queue for this priority is at its configured depth
│   │   └── RateLimited       this client is over its request rate or its cap on waiting jobs
│   ├── BrokerUnavailable     the broker did not confirm the message
│   ├── StoreUnavailable      the job store did not answer
│   ├── BlobStoreUnavailable  the audio could not be stored or fetched
│   └── NoWorkers             no worker has a model loaded
├── TransientFault            a worker-side fault worth retrying (CUDA OOM, store blip)
├── RunTimeLimit              a run went past the time limit of the audio it really holds
├── Canceled                  nobody wants the run any more: its work stopped
├── ServerFault               a bug or a misconfiguration: an operator must look
│   └── ConfigurationError    a setting names something that does not exist
└── APIError                  raised by emotionq.client: the API answered with a problem, or not at all

Their HTTP status codes live in one place: ``emotionq.web.problems``.
"""

from __future__ import annotations


class EmotionQError(Exception):
    """Root of every error emotionq raises on purpose."""

    code = "internal_error"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class BadInput(EmotionQError):
    """The request or the audio is wrong: fix it, do not retry."""

    code = "bad_input"


class InvalidRequest(BadInput):
    """A form field, header or parameter is malformed."""

    code = "invalid_request"


class PayloadTooLarge(BadInput):
    """The upload exceeds the byte limit."""

    code = "payload_too_large"


class RequestTimeout(BadInput):
    """The upload stalled part-way: send it again."""

    code = "request_timeout"


class AudioTooLong(BadInput):
    """The recording exceeds the duration limit."""

    code = "audio_too_long"


class AudioURLError(BadInput):
    """The audio_url could not be fetched: refused by policy, or its server did not deliver it."""

    code = "audio_url_unreachable"

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = False) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable


class AudioError(BadInput):
    """The bytes are not usable audio: undecodable, empty, too short, non-finite or out of range."""

    code = "audio_undecodable"


class ClientGone(EmotionQError):
    """The client closed the connection before its request was read: its doing, counted as such."""

    code = "client_disconnected"


class Unauthorized(EmotionQError):
    """No API key, or one that is unknown or revoked."""

    code = "unauthorized"


class NotFound(EmotionQError):
    """No such job, or another client's (or no such route)."""

    code = "not_found"


class MethodNotAllowed(EmotionQError):
    """The route exists, but not with this method."""

    code = "method_not_allowed"


class Conflict(EmotionQError):
    """The request clashes with the job or with an earlier request."""

    code = "conflict"


class Unavailable(EmotionQError):
    """A dependency is down: retry after Retry-After seconds."""

    code = "unavailable"
    retryable = True


class Overloaded(Unavailable):
    """The queue for this priority is full: retry after Retry-After seconds."""

    code = "queue_full"


class RateLimited(Overloaded):
    """This client is over one of its limits (request rate, jobs waiting): retry after Retry-After seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, policy: str, state: str, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s, self.policy, self.state = retry_after_s, policy, state


class BrokerUnavailable(Unavailable):
    """The broker did not confirm the message."""

    code = "broker_unavailable"


class StoreUnavailable(Unavailable):
    """The job store did not answer."""

    code = "store_unavailable"


class BlobStoreUnavailable(Unavailable):
    """The audio could not be stored or fetched."""

    code = "blob_store_unavailable"


class NoWorkers(Unavailable):
    """No worker has a model loaded and answering."""

    code = "no_workers"


class TransientFault(EmotionQError):
    """A worker-side fault worth retrying (CUDA out of memory, a store blip)."""

    code = "transient_fault"
    retryable = True


class RunTimeLimit(EmotionQError):
    """A run went past the time limit of the audio it really holds."""

    code = "time_limit"


class Canceled(EmotionQError):
    """Nobody wants the run any more: its work stopped."""

    code = "canceled"


class ServerFault(EmotionQError):
    """A bug or a misconfiguration: an operator must look."""

    code = "internal_error"


class ConfigurationError(ServerFault):
    """A setting names something that does not exist."""

    code = "configuration_error"


class APIError(EmotionQError):
    """A problem+json answer of the API, as the client sees it; ``status`` is None when the API did not answer."""

    def __init__(self, message: str, *, code: str, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.status, self.retryable, self.retry_after = status, retryable, retry_after

    @property
    def detail(self) -> str:
        return self.message

    def __str__(self) -> str:
        return f"{self.status or 'no answer'} {self.code}: {self.message}"
