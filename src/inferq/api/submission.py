"""Putting work on the queue and taking it off: the one way any route does either."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from inferq import redis_keys
from inferq.errors import JobNotFound, QueueUnavailable
from inferq.jobs.schemas import Job
from inferq.jobs.store import NewJob
from inferq.queue import enqueue
from inferq.streams import append_terminal

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


async def cancel(services: Services, key_id: str, job_id: str) -> tuple[Job, bool]:
    """Cancel a job: a queued one ends now, a running one is asked to stop.

    Returns the job as it then is, and whether a stop was requested of a running job.
    A job already finished is returned unchanged.
    """
    ttl = services.settings.result_ttl_seconds
    if await services.jobs.cancel_queued(key_id, job_id):
        job = await _must_get(services, key_id, job_id)
        await append_terminal(services.redis, job, ttl)
        return job, False
    if await services.jobs.request_cancel(key_id, job_id):
        await services.redis.set(
            redis_keys.cancel_flag(job_id), b"1", ex=services.settings.visibility_timeout_seconds
        )
        return await _must_get(services, key_id, job_id), True
    return await _must_get(services, key_id, job_id), False


async def _must_get(services: Services, key_id: str, job_id: str) -> Job:
    job = await services.jobs.get(key_id, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id!r}")
    return job
