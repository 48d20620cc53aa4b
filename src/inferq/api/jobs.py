"""Submit, poll, list and cancel jobs."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from inferq.api.deps import (
    CurrentCaller,
    CurrentKey,
    IdempotencyKey,
    ServicesDep,
    require_json,
)
from inferq.api.openapi import errors
from inferq.api.submission import answer_once, cancel, submit
from inferq.api.webhooks import prepare_webhook
from inferq.errors import Conflict, InvalidRequest, JobNotFound
from inferq.idempotency import Answer
from inferq.jobs.schemas import Job, JobCreate, JobPage, JobStatus
from inferq.jobs.store import NewJob, decode_cursor
from inferq.jobs.validation import check_embedding_options, check_limits

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


async def _job_or_404(services: ServicesDep, key_id: str, job_id: str) -> Job:
    job = await services.jobs.get(key_id, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id!r}")
    return job


@router.post(
    "",
    status_code=202,
    response_model=Job,
    dependencies=[Depends(require_json)],
    responses={
        202: {"description": "Accepted; `Location` names the job."},
        **errors(409, 415, 429),
    },
)
async def create_job(
    body: JobCreate,
    caller: CurrentCaller,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Validate, admit, store and enqueue a job; answers at once with the queued job."""

    async def accept() -> Answer:
        spec = services.registry.get(body.model, kind="chat")
        # The limits hold for the whole request, the conversation's turns included (as
        # many of the newest as fit).
        whole, history = await services.conversations.with_history(
            caller.key_id, body, spec, services.settings
        )
        check_limits(whole, services.settings, spec.max_tokens)
        check_embedding_options(whole, services.settings, services.registry)
        await prepare_webhook(services, caller.key_id, body.webhook)
        job = await submit(
            services,
            NewJob.generation(caller.key_id, whole, history=history),
            spec.pool,
            caller,
            prompt_texts=whole.texts(),
            max_tokens=whole.max_tokens,
        )
        return Answer(202, job.model_dump(mode="json"), {"Location": f"/v1/jobs/{job.id}"})

    return await answer_once(services, caller.key_id, idempotency_key, body, accept)


@router.get("")
async def list_jobs(
    key_id: CurrentKey,
    services: ServicesDep,
    status: JobStatus | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobPage:
    """The caller's jobs, newest first."""
    position = None
    if cursor:
        try:
            position = decode_cursor(cursor)
        except ValueError as exc:
            raise InvalidRequest("`cursor` is not a cursor this service issued") from exc
    page, next_cursor = await services.jobs.list(key_id, status, position, limit)
    return JobPage(data=list(page), next_cursor=next_cursor)


@router.get("/{job_id}")
async def get_job(job_id: str, key_id: CurrentKey, services: ServicesDep) -> Job:
    """The job's status and, once it has finished, its output, usage or error."""
    return await _job_or_404(services, key_id, job_id)


@router.delete(
    "/{job_id}", responses={202: {"description": "Cancellation requested"}, **errors(409)}
)
async def cancel_job(
    job_id: str, key_id: CurrentKey, services: ServicesDep, response: Response
) -> Job:
    """Cancel: a queued job never runs; a running one stops and keeps its partial output."""
    await _job_or_404(services, key_id, job_id)
    job, requested = await cancel(services, key_id, job_id)
    if requested:
        response.status_code = 202
        return job
    if job.status == "cancelled":
        return job
    raise Conflict(f"the job has already {job.status}", job_status=job.status)
