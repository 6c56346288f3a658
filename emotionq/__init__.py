"""emotionq: speech-emotion recognition as a Celery service.

``celery -A emotionq ...`` finds the Celery app here; it is imported on first use
so that ``emotionq.inference`` and the CLI stay cheap to import. Nothing here needs more than the
standard library: a client-only install (``pip install emotionq``, no ``[server]``) imports it.
"""

__version__ = "0.1.0"

# The nine emotion labels every result scores, in the models' token order: part of the API, so the client
# (its CSV columns) reads them here without the model layer.
LABELS: tuple[str, ...] = ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised",
                           "unknown")


def __getattr__(name: str):
    if name in ("app", "celery"):
        from emotionq.queues import app

        return app
    raise AttributeError(name)
