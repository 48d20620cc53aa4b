"""Handing a batch to the workers: a Celery task that moves it one step on.

The task carries only the batch id; what to do is read from the batch row, so a message
that arrives twice or late does nothing wrong. It goes to the io pool's high queue:
fan-out and writing results are short and must not wait behind the batch's own
low-priority jobs.
"""

from __future__ import annotations

from celery import Celery

from inferq.queue import EXCHANGE, queue_name

ADVANCE_BATCH_TASK = "inferq.advance_batch"
DISPATCH_QUEUE = queue_name("io", "high")


def send_advance(app: Celery, batch_id: str) -> None:
    """Publish the batch's id (blocking call)."""
    app.send_task(
        ADVANCE_BATCH_TASK,
        args=[batch_id],
        queue=DISPATCH_QUEUE,
        exchange=EXCHANGE.name,
        routing_key=DISPATCH_QUEUE,
    )


def redispatch_seconds(reaper_interval: float) -> int:
    """How long a hand-off stands before the sweep may hand the same batch over again."""
    return max(5, int(5 * reaper_interval))
