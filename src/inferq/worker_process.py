"""One worker process from start to stop: its context, the background threads beside the
jobs (liveness, reaper, batch sweep, webhooks, expiries), the task and Celery's consumer.

`inferq.worker` holds what runs a job; this module only wires a process around it, in the
order things must start (the heartbeat before any job is claimed, the heap frozen once the
models are loaded) and stop (the reverse).
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import signals

from inferq.admission import ending
from inferq.batches import runtime as batch_runtime
from inferq.config import Settings
from inferq.files.expiry import FileExpiry
from inferq.handlers import build_handlers
from inferq.heap import freeze_startup_heap
from inferq.jobs.expiry import ResultExpiry
from inferq.jobs.schemas import Job
from inferq.liveness import Liveness
from inferq.observability import jobs as obs
from inferq.observability import propagation
from inferq.observability.process import setup_worker
from inferq.orphans import OrphanSweep
from inferq.queue import RUN_JOB_TASK, enqueue, pool_queues
from inferq.reaper import Reaper
from inferq.redis_clients import worker_client
from inferq.streams import StreamWriter
from inferq.thread_pool import PrestartedThreadPool
from inferq.webhooks import runtime as webhook_runtime
from inferq.worker import FinishHook, JobRunner, WorkerContext, build_context


def run_worker(settings: Settings, pool: str, concurrency: int | None = None) -> int:
    """Run a worker of `pool` until it is told to stop; returns its exit code."""
    if concurrency is None:
        concurrency = settings.io_concurrency if pool == "io" else settings.local_concurrency
    ctx = build_context(settings, pool, concurrency)
    setup_worker(settings, ctx.engine, pool)
    # Built now, not on their first jobs: weights load, and SDK modules are in place
    # before the start-up heap is frozen (see ModelRegistry.build).
    ctx.registry.build(pool, strict=pool == "local")
    # The heartbeat and the reaper get their own connections: behind the jobs' pool (one
    # lock for a thousand threads, and connections made under it while the pool grows)
    # a heartbeat waited past the worker's TTL and the reaper took its live jobs away.
    # Its timeout well inside the worker's TTL: a beat stuck on a silent connection fails
    # and goes out on a new one before the reaper takes this worker for dead.
    silent = max(settings.worker_ttl_seconds / 3, 0.5)
    control = worker_client(settings.resolved_redis_url, 8, timeout=silent)
    liveness = Liveness(
        control, ctx.worker_id, settings.worker_ttl_seconds, settings.heartbeat_seconds
    )
    finish_hooks: list[FinishHook] = []
    runner = JobRunner(ctx, liveness, build_handlers(ctx), finish_hooks)
    batch_sweeper = batch_runtime.install(ctx, finish_hooks)
    webhook_sender = webhook_runtime.install(ctx, finish_hooks)
    reaper = Reaper(
        ctx.store,
        control,
        settings.max_attempts,
        settings.reaper_interval_seconds,
        requeue=lambda job: enqueue(
            ctx.celery, job.id, ctx.registry.pool_of(job.model, ctx.pool), job.priority
        ),
        ended=lambda job: _ended(ctx, runner, job),
        orphans=OrphanSweep(ctx.engine, ctx.celery, ctx.registry, settings),
    )
    expiry = ResultExpiry.from_settings(ctx.engine, control, settings)
    file_expiry = FileExpiry(ctx.engine, control, settings.result_expiry_interval_seconds)
    # Started in this order, stopped in the reverse one.
    background = (liveness, reaper, batch_sweeper, webhook_sender, expiry, file_expiry)

    register_task(ctx, runner)
    signals.worker_shutting_down.connect(lambda **_: runner.stopping.set(), weak=False)
    for thread in background:
        thread.start()
    worker = ctx.celery.Worker(
        pool_cls=PrestartedThreadPool,
        concurrency=concurrency,
        queues=pool_queues(pool),
        hostname=f"{pool}@{ctx.worker_id}",
        loglevel=settings.log_level,
        quiet=True,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        optimization="fair",
    )
    # Again once the worker is up: its pool's threads and consumer are start-up too.
    signals.worker_ready.connect(lambda **_: freeze_startup_heap(), weak=False)
    freeze_startup_heap()
    try:
        worker.start()
    finally:
        for thread in reversed(background):
            thread.stop()
        ctx.engine.dispose()
    return int(worker.exitcode or 0)


def register_task(ctx: WorkerContext, runner: JobRunner) -> None:
    """The task a job's message names: run it with the submitting request's id bound."""

    @ctx.celery.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True, bind=True)  # type: ignore[untyped-decorator]
    def run_job(task: Any, job_id: str) -> None:
        request_id = propagation.request_id_of(task.request)
        with structlog.contextvars.bound_contextvars(request_id=request_id, job_id=job_id):
            runner.run(job_id)


def _ended(ctx: WorkerContext, runner: JobRunner, job: Job) -> None:
    """A job the reaper ended (cancelled, or out of attempts) gets its terminal event."""
    writer = StreamWriter(ctx.redis, job.id, ctx.settings.result_ttl_seconds, 1)
    writer.terminal(job, also=ending(job))
    obs.job_finished(job, None, runner.provider_of(job.model))
    runner.finished(job)


__all__ = ["register_task", "run_worker"]
