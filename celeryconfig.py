"""Celery's settings, translated from ``emotionq.settings`` (the one place settings live).

``config(settings)`` is read by ``emotionq.queues.make_celery``; importing this module reads no settings,
creates no directory and opens no connection.
"""

from __future__ import annotations

from typing import Any

from emotionq.queues import INFERENCE_QUEUE, TASK_QUEUES, TASK_ROUTES
from emotionq.settings import Settings

EMBEDDED_POLL_S = 0.1  # how often a worker looks at the file broker's empty queues (embedded mode)


def config(settings: Settings) -> dict[str, Any]:
    """Celery's lowercase settings for ``settings``."""
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport_options": _transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "broker_heartbeat": 30,
        # JSON only, everywhere.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # Results live in the job store; Celery keeps none.
        "task_ignore_result": True,
        "result_backend": None,
        # Strict priority and no lost jobs: one message in flight per worker process, acked when done,
        # redelivered if the process dies (emotionq.jobs caps redeliveries).
        "task_queues": TASK_QUEUES,
        "task_default_queue": INFERENCE_QUEUE,
        "task_create_missing_queues": False,
        "task_default_delivery_mode": "persistent",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Each pool process loads the model before it reports up; Celery's default 4 s would kill every
        # replacement process (after a crash or a hard time limit) while it is still loading.
        "worker_proc_alive_timeout": settings.model_load_timeout_s,
        "task_routes": TASK_ROUTES,
        # Time limits: per job they scale with the audio (emotionq.queues.publish_run); these are the caps.
        "task_soft_time_limit": settings.max_time_limit - settings.hard_time_limit_grace,
        "task_time_limit": settings.max_time_limit,
        # For Flower and `celery events`.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "worker_hijack_root_logger": False,
    }


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.effective_broker_url.startswith("filesystem://"):  # folders made by make_celery
        folder = str(settings.broker_dir)
        # kombu looks at an empty folder again after polling_interval (1 s by default): a worker that just
        # finished a job, or an idle one, started the next up to a second late. A listdir every 0.1 s is cheap.
        return {"data_folder_in": folder, "data_folder_out": folder, "polling_interval": EMBEDDED_POLL_S,
                "control_folder": str(settings.broker_dir / "control")}
    # Publisher confirms: apply_async returns only once RabbitMQ has the message.
    return {"confirm_publish": True}
