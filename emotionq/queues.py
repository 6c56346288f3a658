"""The queues, the tasks' names, the Celery application, and publishing runs to them.

Inference uses one RabbitMQ queue per set of model families a run needs (``emotion``: emotion2vec
alone; ``emotion.sensevoice``: with SenseVoice, transcript=true), each declared with ``x-max-priority``,
and the priority travels on each message. A worker consumes the queues of what it serves
(``worker_queues``), so a run that needs SenseVoice reaches only workers that load it. One priority
queue with prefetch 1 and late acks is strict: a high job starts before every low job not yet started;
across a worker's two queues (taken about 1:1) strict priority and fair share hold because the store's
dispatcher decides what enters the broker (``emotionq.jobs.scheduler.dispatch``) and a claim gives back a
low run while high ones wait. Webhook deliveries have their own queue, served by CPU workers.

Tasks are published by name (``send_task``), so the API never imports the
worker's code or the model. Apps come from ``make_celery(settings)``, never at
import; ``celery -A emotionq`` finds this process's one (``celery_app``) through
``emotionq.app``. Celery's settings are ``celeryconfig.config``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache

import amqp.exceptions
from celery import Celery
from kombu import Exchange, Message, Queue
from kombu.exceptions import ChannelError, KombuError

from emotionq.errors import BrokerUnavailable
from emotionq.settings import Priority, Settings, get_settings

log = logging.getLogger(__name__)

INFER_TASK = "emotionq.infer"
DELIVER_TASK = "emotionq.deliver_webhook"
INFERENCE_QUEUE = "emotion"
WEBHOOK_QUEUE = "webhooks"
MAX_PRIORITY = 3  # declared once; a queue's x-max-priority can never change
PRIORITY: dict[str, int] = {"low": 0, "high": MAX_PRIORITY}
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}

SENSEVOICE_QUEUE = f"{INFERENCE_QUEUE}.sensevoice"  # runs that need SenseVoice (``emotionq.inference.registry``)


def _inference_queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name, durable=True, max_priority=MAX_PRIORITY)


INFERENCE = _inference_queue(INFERENCE_QUEUE)  # also read directly: batching, purge
INFERENCE_QUEUES = (INFERENCE, _inference_queue(SENSEVOICE_QUEUE))
TASK_QUEUES = (
    *INFERENCE_QUEUES,
    Queue(WEBHOOK_QUEUE, Exchange(WEBHOOK_QUEUE, type="direct"), routing_key=WEBHOOK_QUEUE, durable=True),
)
TASK_ROUTES = {INFER_TASK: {"queue": INFERENCE_QUEUE}, DELIVER_TASK: {"queue": WEBHOOK_QUEUE}}


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``: its tasks (``emotionq.tasks``) load when a worker starts, and
    in embedded mode the file broker's folders are made here."""
    import celeryconfig  # the top-level module, beside the package; it imports this one

    if settings.effective_broker_url.startswith("filesystem://"):
        (settings.broker_dir / "control").mkdir(parents=True, exist_ok=True)
    app = Celery("emotionq", include=["emotionq.tasks"])
    app.config_from_object(celeryconfig.config(settings))
    return app


@lru_cache(maxsize=1)
def celery_app() -> Celery:
    """This process's app, from its settings, made on first use: the one ``celery -A emotionq`` and the
    worker's tasks use."""
    return make_celery(get_settings())


def queue_for(families: list[str]) -> str:
    """The queue of a run that needs the model ``families`` (``emotionq.inference.registry.needed``)."""
    return SENSEVOICE_QUEUE if "sensevoice" in families else INFERENCE_QUEUE


def worker_queues(settings: Settings) -> list[str]:
    """The inference queues a worker with ``settings`` consumes: those whose runs its models can score."""
    return [INFERENCE_QUEUE, *([SENSEVOICE_QUEUE] if "sensevoice" in settings.served_models() else [])]


def message_priority(priority: Priority) -> int:
    return PRIORITY[priority]


def publish_run(celery: Celery, run, *, settings: Settings, job_id: str, families: list[str] = ()) -> str:
    """Queue one run (an ``emotionq.jobs.Run``) at its priority, on the queue of the model ``families`` it
    needs; returns the task id. Raises BrokerUnavailable if not confirmed."""
    audio_s = work_seconds(run)
    soft, hard = settings.time_limits(audio_s)
    started = time.perf_counter()
    try:
        result = celery.send_task(
            INFER_TASK,
            args=[run.id],
            kwargs={"job_id": job_id, "sha256": run.sha256, "duration_s": round(audio_s, 3),
                    "priority": run.priority},
            queue=queue_for(list(families)),
            priority=message_priority(run.priority),
            soft_time_limit=soft,
            time_limit=hard,
            retry=True,
            retry_policy=PUBLISH_RETRY,
        )
    except (KombuError, amqp.exceptions.AMQPError, OSError) as exc:
        log.warning("publish of %s failed after %.3fs: %s", run.id, time.perf_counter() - started, exc)
        raise BrokerUnavailable(f"the broker did not accept the job ({exc}); retry shortly") from exc
    return result.id


def work_seconds(run) -> float:
    """Seconds of audio the model may score for ``run``, which its time limits and batch budget follow: every
    channel's with channels=separate."""
    if (run.options or {}).get("channels") == "separate":
        return run.duration_s * max(1, run.channels or 1)
    return run.duration_s


def waiting_messages(celery: Celery) -> int | None:
    """How many messages wait in the inference queues, not yet delivered; None if the broker cannot say."""
    try:
        with celery.connection_for_write() as conn:
            total = 0
            for queue in INFERENCE_QUEUES:
                channel = conn.channel()  # a failed passive declare closes its channel
                try:
                    _, count, _ = queue(channel).queue_declare(passive=True)
                    total += int(count)
                except (amqp.exceptions.NotFound, ChannelError):
                    if queue is INFERENCE:
                        raise
                    # never declared (no run and no worker needed it yet): nothing waits there
                finally:
                    _close_quietly(channel)
            return total
    except Exception:  # noqa: BLE001 - kombu raises many kinds here; all mean "unknown"
        return None


def _close_quietly(channel) -> None:
    try:
        channel.close()
    except Exception:  # noqa: BLE001 - already closed by the broker
        pass


def ping(celery: Celery) -> None:
    """Raise BrokerUnavailable unless the broker accepts a connection."""
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # kombu raises many kinds here; all mean "not reachable"
        raise BrokerUnavailable(f"the broker does not answer: {exc}") from exc


@dataclass(frozen=True)
class InferMessage:
    """What an inference message taken straight from the queue carries (Celery protocol 2)."""

    task_id: str
    run_id: str
    duration_s: float
    priority: int  # the message's own priority, as RabbitMQ orders it


def read_infer(message: Message) -> InferMessage | None:
    """The inference task in ``message``; None for a message of anything else."""
    headers = message.headers or {}
    if headers.get("task") != INFER_TASK:
        return None
    args, kwargs, _ = message.decode()
    return InferMessage(task_id=headers["id"], run_id=args[0], duration_s=float(kwargs.get("duration_s", 0.0)),
                        priority=int(message.properties.get("priority") or 0))
