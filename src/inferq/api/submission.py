"""Putting work on the queue and taking it off: the one way any route does either."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

import orjson
import structlog
from fastapi import Response
from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from inferq.admission import Decision, estimate_prompt_tokens
from inferq.errors import (
    JobFailed,
    JobInvalid,
    JobNotFound,
    JobPending,
    Overloaded,
    QueueUnavailable,
    RateLimited,
)
from inferq.idempotency import Answer
from inferq.jobs.schemas import TERMINAL_STATUSES, Job
from inferq.jobs.store import NewJob
from inferq.keys import Caller
from inferq.liveness import request_stops
from inferq.observability import jobs as obs
from inferq.observability import propagation
from inferq.observability.metrics import ADMISSION_REJECTIONS, JOBS_SUBMITTED
from inferq.observability.tracing import is_on as tracing_is_on
from inferq.observability.tracing import tracer
from inferq.queue import RUN_JOB_TASK, enqueue
from inferq.streams import append_terminal, wait_terminal

if TYPE_CHECKING:
    from inferq.app import Services

log = logging.getLogger(__name__)
events = structlog.get_logger("inferq.jobs")


async def submit(
    services: Services,
    new: NewJob,
    pool: str,
    caller: Caller | None = None,
    prompt_texts: Sequence[str] = (),
    max_tokens: int = 0,
) -> Job:
    """Admit (when a caller is given), commit the row, then enqueue.

    If the broker refuses, the row is ended and the client gets 503: no row is left
    queued for ever.
    """
    if caller is not None:
        reserve = estimate_prompt_tokens(list(prompt_texts)) + max_tokens
        await admit(services, caller, new.id, reserve)
    try:
        job = await services.jobs.insert(new)
        await publish(services, job.id, pool, new.priority)
    except Exception:
        await _release(services, new)
        raise
    JOBS_SUBMITTED.labels(new.model, new.priority).inc()
    events.info(
        "job.queued", job_id=job.id, key_id=new.key_id, model=new.model, priority=new.priority
    )
    return job


async def _release(services: Services, new: NewJob) -> None:
    """Give back a refused job's admission, never hiding why it was refused: a Redis that
    refused the publish may refuse this too (full, read-only)."""
    try:
        await services.admission.release(new.key_id, new.id)
    except Exception as exc:
        log.warning("could not release the admission of job %s: %s", new.id, exc)


async def admit(services: Services, caller: Caller, job_id: str, reserve_tokens: int) -> None:
    """Raise RateLimited (429) or Overloaded (503) unless the job may be accepted."""
    settings = services.settings
    bound = settings.max_queued_jobs
    if bound is not None and await services.queue_depth.get() >= bound:
        ADMISSION_REJECTIONS.labels("queue_full").inc()
        raise Overloaded("the queue is full; try again shortly", headers={"Retry-After": "5"})
    limits = caller.limits

    async def decide() -> Decision:
        return await services.admission.admit(
            caller.key_id,
            job_id,
            reserve_tokens,
            rpm=limits.rpm if limits.rpm is not None else settings.default_rpm_limit,
            tpm=limits.tpm if limits.tpm is not None else settings.default_tpm_limit,
            max_active=(
                limits.max_active_jobs
                if limits.max_active_jobs is not None
                else settings.default_max_active_jobs
            ),
        )

    decision = await decide()
    if decision.limit_name == "active_jobs" and await _free_lost_slots(services, caller.key_id):
        decision = await decide()
    if not decision.admitted:
        ADMISSION_REJECTIONS.labels(decision.limit_name).inc()
        raise RateLimited(
            f"over this key's {decision.limit_name.replace('_', ' ')} limit",
            headers=decision.headers(),
            limit=decision.limit_name,
        )


async def _free_lost_slots(services: Services, key_id: str) -> bool:
    """Free the key's active-job slots whose jobs have ended (the row says so) or never
    reached the database (taken a window ago, no row); True if any was freed."""
    slots = await services.admission.slots_to_check(key_id)
    if not slots:
        return False
    statuses = await services.jobs.statuses(key_id, [slot.job_id for slot in slots])
    lost = [
        slot.job_id
        for slot in slots
        if statuses.get(slot.job_id) in TERMINAL_STATUSES
        or (slot.job_id not in statuses and not slot.recent)
    ]
    if not lost:
        return False
    await services.admission.free_slots(key_id, lost)
    log.warning("key %s: freed %d active-job slots of jobs that had ended", key_id, len(lost))
    return True


async def publish(services: Services, job_id: str, pool: str, priority: str) -> None:
    try:
        if services.publisher is None:
            await run_in_threadpool(enqueue, services.celery, job_id, pool, priority)
        else:
            # The span Celery's instrumentation would open around send_task; with tracing
            # off, not even a no-op one (5 µs of CPU per submitted job; the check costs 1).
            span = (
                tracer.start_as_current_span(f"apply_async/{RUN_JOB_TASK}", kind=SpanKind.PRODUCER)
                if tracing_is_on()
                else nullcontext()
            )
            with span:
                headers = propagation.outgoing_headers()
                await services.publisher.enqueue(job_id, pool, priority, headers)
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
        await services.admission.release(key_id, job_id)
        obs.job_finished(job, None, None)  # it ended here, not on a worker
        return job, False
    if await services.jobs.request_cancel(key_id, job_id):
        async with services.redis.pipeline(transaction=False) as pipe:
            request_stops(pipe, [job_id], services.settings.visibility_timeout_seconds)
            await pipe.execute()
        return await _must_get(services, key_id, job_id), True
    return await _must_get(services, key_id, job_id), False


async def _must_get(services: Services, key_id: str, job_id: str) -> Job:
    job = await services.jobs.get(key_id, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id!r}")
    return job


async def answer_once(
    services: Services,
    key_id: str,
    idempotency_key: str | None,
    body: BaseModel,
    produce: Callable[[], Awaitable[Answer]],
) -> Response:
    """`produce()`'s answer; with an Idempotency-Key, the first such answer, replayed for
    the same body."""
    if idempotency_key is None:
        answer = await produce()
    else:
        fingerprint = body.model_dump_json().encode()
        answer = await services.idempotency.run(key_id, idempotency_key, fingerprint, produce)
    return Response(
        orjson.dumps(answer.body),
        status_code=answer.status,
        headers=answer.headers,
        media_type="application/json",
    )


async def wait_finished(
    services: Services, key_id: str, job_id: str, headers: dict[str, str]
) -> Job:
    """The finished job, or JobPending naming it once the configured wait is over.

    The terminal event may never come (a worker cut off from Redis, or killed between
    saving the job and telling; an expired stream): the row is the truth, read after 2 s
    without the event, then at doubling intervals up to 16 s. Read only at the end of the
    wait, a job finished in seconds kept its client for the whole wait (120 s).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + services.settings.sync_wait_seconds
    step = 2.0
    while True:
        left = deadline - loop.time()
        final = await wait_terminal(services.redis, job_id, max(min(step, left), 0.0))
        if final is not None:
            return final
        row = await services.jobs.get(key_id, job_id)
        if row is not None and row.status in TERMINAL_STATUSES:
            return row
        if deadline - loop.time() <= 0:
            break
        step = min(step * 2, 16.0)
    raise JobPending(
        f"job {job_id} is still running; poll /v1/jobs/{job_id} for its result",
        headers=headers,
        job_id=job_id,
    )


def failure(final: Job, headers: dict[str, str]) -> JobFailed:
    """What a synchronous route answers for a job that did not succeed: 400 when the
    provider found the request invalid (the client's to fix), else 502."""
    error = final.error
    return (JobInvalid if final.refused_as_invalid else JobFailed)(
        error.message if error else f"the job ended {final.status}",
        headers=headers,
        job_id=final.id,
        job_status=final.status,
    )
