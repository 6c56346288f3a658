"""The queues, and publishing to them.

Inference uses ONE RabbitMQ queue declared with ``x-max-priority``, and the
priority travels on each message. Two queues consumed by one worker are taken
about 1:1 (a high job waits behind low ones); one priority queue with prefetch 1
and late acks is strict: a high job starts before every low job not yet started.
Webhook deliveries have their own queue, served by CPU workers.
"""

from __future__ import annotations

from kombu import Exchange, Queue

from emotionq.settings import Priority

INFERENCE_QUEUE = "emotion"
WEBHOOK_QUEUE = "webhooks"
MAX_PRIORITY = 3  # declared once; a queue's x-max-priority can never change
PRIORITY: dict[str, int] = {"low": 0, "high": MAX_PRIORITY}

INFERENCE = Queue(INFERENCE_QUEUE, Exchange(INFERENCE_QUEUE, type="direct"), routing_key=INFERENCE_QUEUE,
                  durable=True, max_priority=MAX_PRIORITY)  # also read directly: batching, purge
TASK_QUEUES = (
    INFERENCE,
    Queue(WEBHOOK_QUEUE, Exchange(WEBHOOK_QUEUE, type="direct"), routing_key=WEBHOOK_QUEUE, durable=True),
)


def message_priority(priority: Priority) -> int:
    return PRIORITY[priority]
