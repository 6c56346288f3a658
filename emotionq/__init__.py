"""emotionq: speech-emotion recognition as a Celery service.

``celery -A emotionq ...`` finds the Celery app here; it is made on first use
(``emotionq.queues.celery_app``), so importing emotionq reads no settings and
opens nothing.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("app", "celery"):
        from emotionq.queues import celery_app

        return celery_app()
    raise AttributeError(name)
