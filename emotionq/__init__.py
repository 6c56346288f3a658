"""emotionq: speech-emotion recognition as a Celery service.

``celery -A emotionq ...`` finds the Celery app here; it is made on first use
(``emotionq.queues.celery_app``), so importing emotionq reads no settings and
opens nothing. Nothing here needs more than the standard library: a client-only install
(``pip install emotionq``, no ``[server]``) imports it.
"""

__version__ = "0.1.0"

# The nine emotion labels every result scores, in the models' token order: part of the API, so the client
# (its CSV columns) reads them here without the model layer.
LABELS: tuple[str, ...] = ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised",
                           "unknown")


def __getattr__(name: str):
    if name in ("app", "celery"):
        from emotionq.queues import celery_app

        return celery_app()
    raise AttributeError(name)
