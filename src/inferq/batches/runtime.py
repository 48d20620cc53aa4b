"""Batches in a worker process: the advance task, the finish hook and the sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferq.batches.dispatch import ADVANCE_BATCH_TASK, redispatch_seconds
from inferq.batches.runner import BatchRunner
from inferq.batches.sweep import BatchSweeper

if TYPE_CHECKING:
    from inferq.worker import FinishHook, WorkerContext


def install(ctx: WorkerContext, finish_hooks: list[FinishHook]) -> BatchSweeper:
    """Register the batch task and hook on this worker; returns its (unstarted) sweeper."""
    runner = BatchRunner(
        ctx.engine, ctx.redis, ctx.celery, ctx.registry, ctx.settings, ctx.worker_id
    )

    @ctx.celery.task(name=ADVANCE_BATCH_TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def advance_batch(batch_id: str) -> None:
        runner.advance(batch_id)

    finish_hooks.append(runner.on_job_finished)
    interval = ctx.settings.reaper_interval_seconds
    return BatchSweeper(ctx.engine, ctx.redis, ctx.celery, interval, redispatch_seconds(interval))
