"""The Celery app and `enqueue`: the only module that talks to the broker.

Queues are named `inferq.<pool>.<priority>`. A pool is a kind of worker: `io` for remote
providers (many calls in flight per process) and `local` for in-process models (one
generation at a time per loaded model). Workers list their pool's queues high first, and
on Redis the `priority` queue-order strategy makes them drain in that order.
"""

from __future__ import annotations

from celery import Celery
from kombu.entity import Exchange, Queue

from inferq.config import PRIORITIES, Settings

RUN_JOB_TASK = "inferq.run_job"
POOLS = ("io", "local")
EXCHANGE = Exchange("inferq", type="direct")  # type: ignore[no-untyped-call]


def queue_name(pool: str, priority: str) -> str:
    return f"inferq.{pool}.{priority}"


def pool_queues(pool: str) -> list[str]:
    """A pool's queues, highest priority first."""
    return [queue_name(pool, p) for p in PRIORITIES]


def make_celery(settings: Settings, pool_connections: int = 64) -> Celery:
    """A Celery app configured for inferq's durability guarantees."""
    app = Celery("inferq", broker=settings.resolved_broker_url, set_as_current=False)
    transport_options: dict[str, object] = {
        # Longer than any job runs: the broker must not redeliver a live job. Crashed
        # workers are recovered in seconds by the reaper, not by this timeout.
        "visibility_timeout": settings.visibility_timeout_seconds,
    }
    if settings.broker_is_redis():
        transport_options["queue_order_strategy"] = "priority"
        transport_options["max_connections"] = pool_connections
    app.conf.update(
        # Each queue bound by its own name on one direct exchange: a message reaches
        # exactly the queue it names.
        task_queues=[
            Queue(name, EXCHANGE, routing_key=name)  # type: ignore[no-untyped-call]
            for name in (queue_name(pool, p) for pool in POOLS for p in PRIORITIES)
        ],
        task_default_exchange=EXCHANGE.name,
        task_default_exchange_type="direct",
        task_default_queue=queue_name("io", "normal"),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_enable_remote_control=False,
        broker_transport_options=transport_options,
        broker_pool_limit=pool_connections,
        # A broker that does not answer must turn into a quick 503 at submit.
        broker_connection_timeout=1.0,
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
    )
    return app


def enqueue(app: Celery, job_id: str, pool: str, priority: str) -> None:
    """Publish the job's id to its pool's queue for its priority (blocking call)."""
    name = queue_name(pool, priority)
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=name, exchange=EXCHANGE.name, routing_key=name)
