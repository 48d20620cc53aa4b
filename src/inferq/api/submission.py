"""Store a job, then publish it: the one way any route puts work on the queue."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from inferq.errors import QueueUnavailable
from inferq.jobs.schemas import Job
from inferq.jobs.store import NewJob
from inferq.queue import enqueue

if TYPE_CHECKING:
    from inferq.app import Services

log = logging.getLogger(__name__)


async def submit(services: Services, new: NewJob, pool: str) -> Job:
    """Commit the row, then enqueue; if the broker refuses, end the row and answer 503."""
    job = await services.jobs.insert(new)
    await publish(services, job.id, pool, new.priority)
    return job


async def publish(services: Services, job_id: str, pool: str, priority: str) -> None:
    try:
        await run_in_threadpool(enqueue, services.celery, job_id, pool, priority)
    except Exception as exc:
        log.warning("enqueue of %s failed: %s", job_id, exc)
        await services.jobs.fail_unqueued(job_id, f"the broker refused the job: {exc}")
        raise QueueUnavailable("the job queue is unreachable; try again later") from exc
