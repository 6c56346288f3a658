"""Errors of emotionq, split by what the caller can do about them.

EmotionQError                 root; ``code`` is stable, ``retryable`` says whether a retry may help
├── BadInput                  the request or the audio is wrong: fix it, do not retry
│   ├── InvalidRequest        a form field or header is malformed
│   ├── PayloadTooLarge       the upload exceeds the byte limit
│   ├── RequestTimeout        the client stopped sending its request body part-way
│   ├── AudioTooLong          the recording exceeds the duration limit
│   └── AudioError            the bytes are not usable audio: undecodable, empty, too short,
│                             non-finite or absurdly loud samples (``code`` says which)
├── ClientGone                the client closed the connection before its request was read
├── Unauthorized              no API key, or one that is unknown or revoked
├── NotFound                  no such job (or not yours)
├── Conflict                  the request clashes with the state of the job or an earlier request
├── Unavailable               a dependency (broker, store) is down or full: retry later
│   ├── Overloaded            the queue for this priority is at its configured depth
│   ├── BrokerUnavailable     the broker did not confirm the message
│   ├── StoreUnavailable      the job store did not answer
│   └── BlobStoreUnavailable  the audio could not be stored or fetched
├── TransientFault            a worker-side fault worth retrying (CUDA OOM, store blip)
├── RunTimeLimit              a run went past the time limit of the audio it really holds
├── Canceled                  nobody wants the run any more: its work stopped
├── ServerFault               a bug or a misconfiguration: an operator must look
│   └── ConfigurationError    a setting names something that does not exist
└── APIError                  raised by emotionq.client: the API answered with a problem, or not at all

HTTP status codes for these live in one place: ``emotionq.api``.
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
    code = "bad_input"


class InvalidRequest(BadInput):
    code = "invalid_request"


class PayloadTooLarge(BadInput):
    code = "payload_too_large"


class RequestTimeout(BadInput):
    code = "request_timeout"


class AudioTooLong(BadInput):
    code = "audio_too_long"


class AudioError(BadInput):
    """Undecodable, empty, too short, non-finite or out-of-range audio. ``code`` names which."""

    code = "audio_undecodable"


class ClientGone(EmotionQError):
    """Not an error of ours, nor one anybody can be told of: counted and logged as the client's doing."""

    code = "client_disconnected"


class Unauthorized(EmotionQError):
    code = "unauthorized"


class NotFound(EmotionQError):
    code = "not_found"


class Conflict(EmotionQError):
    code = "conflict"


class Unavailable(EmotionQError):
    code = "unavailable"
    retryable = True


class Overloaded(Unavailable):
    code = "queue_full"


class BrokerUnavailable(Unavailable):
    code = "broker_unavailable"


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class BlobStoreUnavailable(Unavailable):
    code = "blob_store_unavailable"


class TransientFault(EmotionQError):
    code = "transient_fault"
    retryable = True


class RunTimeLimit(EmotionQError):
    code = "time_limit"


class Canceled(EmotionQError):
    code = "canceled"


class ServerFault(EmotionQError):
    code = "internal_error"


class ConfigurationError(ServerFault):
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
