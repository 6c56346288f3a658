"""A Python client of the HTTP API: submit audio, read a job, wait for it (following its Server-Sent Events,
resumed after a dropped connection, or by long polls where the API has no stream), follow its events, cancel it.

    with Client("http://127.0.0.1:8000", "eq_...") as api:
        job = api.wait(api.submit("call.wav", priority="high")["id"], timeout=300)

    async with AsyncClient("http://127.0.0.1:8000", "eq_...") as api:
        job = await api.wait((await api.submit("call.wav"))["id"], timeout=300)

``Client`` and ``AsyncClient`` have the same methods and share how calls are built and answers read
(``calls``). Every problem comes back as one exception, :class:`emotionq.errors.APIError` (``status``,
``code``, ``detail``, ``retry_after``). 429 and 503 answers and lost connections are retried with
exponential backoff and full jitter, never sooner than ``Retry-After``; each upload carries an
``Idempotency-Key``, so a retried upload never makes a second job. It needs httpx alone:
``pip install emotionq`` installs it without the server (``emotionq[server]``).
"""

from emotionq.client.asynchronous import AsyncClient
from emotionq.client.blocking import Client
from emotionq.client.calls import TERMINAL, Event, problem, transcript
from emotionq.errors import APIError

__all__ = ["TERMINAL", "APIError", "AsyncClient", "Client", "Event", "problem", "transcript"]
