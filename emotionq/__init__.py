"""emotionq: speech-emotion recognition as a Celery service.

``celery -A emotionq ...`` finds the Celery app here; it is imported on first use
so that ``emotionq.inference`` and the CLI stay cheap to import.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("app", "celery"):
        from emotionq.queues import app

        return app
    raise AttributeError(name)
