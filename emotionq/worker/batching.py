"""Gathering a batch: more inference messages for the job Celery just handed a worker.

Celery gives each worker process one message at a time (prefetch 1, late acks),
which keeps priority strict. When a job starts, its process takes up to
``batch_size - 1`` more messages straight from the queue the job came from (``emotion``, or
``emotion.sensevoice`` for transcripts: its messages need the same models) with
``basic.get`` (RabbitMQ hands them out highest priority first), waiting at most
``batch_wait_ms`` for the batch to fill, and scores them all in one forward pass.

- Priority: a high job waits at most for the batch already running.
- Faults: the extra messages are acked only once their outcome is recorded, on a
  connection owned by this process; if the process dies, RabbitMQ redelivers
  the whole batch (Celery rejects the first message, the dropped connection
  returns the rest), and the redelivery cap in ``emotionq.jobs`` still applies.
- Extra messages run under the time limits of the batch's first job, so they
  add at most ``batch_max_audio_s`` seconds of audio, which the settings check
  fits within that job's base soft limit; a message that would pass that goes
  back to the queue.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import amqp.exceptions
from kombu import Connection, Message
from kombu.exceptions import KombuError

from emotionq.queues import INFERENCE_QUEUE, INFERENCE_QUEUES, read_infer
from emotionq.settings import Settings

log = logging.getLogger(__name__)
POLL_S = 0.002


@dataclass
class Extra:
    """An inference message taken from the queue for a batch."""

    task_id: str
    run_id: str
    duration_s: float
    message: Message

    def done(self) -> None:
        """Its outcome is recorded: drop the message."""
        self.message.ack()

    def release(self) -> None:
        """Put the message back on the queue, unprocessed."""
        self.message.reject(requeue=True)


class Gatherer:
    """Takes waiting inference messages on a connection of this process's own."""

    def __init__(self, broker_url: str, settings: Settings) -> None:
        self.settings, self._url = settings, broker_url
        self._connection = Connection(broker_url, heartbeat=0)  # idle between jobs: no heartbeats to miss
        self._queues: dict = {}  # by name, bound to the connection

    @classmethod
    def enabled_for(cls, broker_url: str, settings: Settings) -> bool:
        return settings.batch_size > 1 and broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))

    def gather(self, queue_name: str = INFERENCE_QUEUE) -> list[Extra]:
        """Up to ``batch_size - 1`` messages waiting in ``queue_name``; none if the broker does not answer."""
        s = self.settings
        wanted, budget = s.batch_size - 1, s.batch_max_audio_s
        extras: list[Extra] = []
        deadline = time.monotonic() + s.batch_wait_ms / 1000
        try:
            queue = self._bound_queue(queue_name)
            while len(extras) < wanted:
                message = queue.get(no_ack=False, accept=["json"])
                if message is None:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(POLL_S)
                    continue
                extra = _extra(message)
                if extra is None or extra.duration_s > budget:
                    message.reject(requeue=True)
                    break  # leave it (and what follows it) to the next batch
                budget -= extra.duration_s
                extras.append(extra)
        except (KombuError, amqp.exceptions.AMQPError, OSError) as exc:  # a batch of one is always fine
            log.warning("could not gather a batch (%s: %s); scoring one job", type(exc).__name__, exc)
            self._reset()
        return extras

    def close(self) -> None:
        self._reset()

    def _bound_queue(self, name: str):
        if name not in self._queues:
            self._connection.ensure_connection(max_retries=1)
            queue = next((q for q in INFERENCE_QUEUES if q.name == name), INFERENCE_QUEUES[0])
            self._queues[name] = queue(self._connection.default_channel)
        return self._queues[name]

    def _reset(self) -> None:
        self._queues = {}
        try:
            self._connection.release()
        except Exception:  # noqa: BLE001 - already broken
            pass
        self._connection = Connection(self._url, heartbeat=0)


def _extra(message: Message) -> Extra | None:
    """The message as a batch member; None for one that is not an inference task (or cannot be read:
    logged, and left to Celery, which fails it with a reason)."""
    try:
        infer = read_infer(message)
    except (KombuError, KeyError, IndexError, TypeError, ValueError):  # a malformed body or header
        log.exception("an inference message could not be read; leaving it in the queue")
        return None
    if infer is None:
        return None
    return Extra(task_id=infer.task_id, run_id=infer.run_id, duration_s=infer.duration_s, message=message)
