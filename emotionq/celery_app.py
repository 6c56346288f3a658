"""The Celery application, configured from ``celeryconfig``."""

from celery import Celery

app = Celery("emotionq", include=["emotionq.tasks"])
app.config_from_object("celeryconfig")
