"""OpenAI's Batch API: a file of requests becomes low-priority jobs, results become files.

The request only stores the batch and hands it to the workers; they fan it out into
jobs and write the result files (see inferq.batches).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from inferq import redis_keys
from inferq.api.deps import CurrentKey, IdempotencyKey, ServicesDep, require_json
from inferq.api.openapi import errors
from inferq.api.submission import answer_once
from inferq.batches.dispatch import redispatch_seconds, send_advance
from inferq.batches.lines import ENDPOINT_BODIES
from inferq.batches.store import BatchStore, Cancellation
from inferq.errors import Conflict, NotFound, QueueUnavailable
from inferq.files.store import ExpiresAfter
from inferq.idempotency import Answer
from inferq.liveness import request_stops
from inferq.streams import terminal_entry

if TYPE_CHECKING:
    from inferq.app import Services

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/batches", tags=["batches"])


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    # How long the result files are kept; by default the result retention.
    output_expires_after: ExpiresAfter | None = None

    @field_validator("endpoint")
    @classmethod
    def _known_endpoint(cls, value: str) -> str:
        if value not in ENDPOINT_BODIES:
            raise ValueError(f"must be one of {', '.join(ENDPOINT_BODIES)}")
        return value

    @field_validator("completion_window")
    @classmethod
    def _only_24h(cls, value: str) -> str:
        if value != "24h":
            raise ValueError("only '24h' is supported")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value and (
            len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
        ):
            raise ValueError("at most 16 keys of ≤ 64 characters, values ≤ 512 characters")
        return value


async def _batches(services: ServicesDep) -> BatchStore:
    return BatchStore(services.engine)


Batches = Annotated[BatchStore, Depends(_batches)]


@router.post("", dependencies=[Depends(require_json)], responses=errors(404, 409, 415))
async def create_batch(
    body: BatchCreate,
    key_id: CurrentKey,
    services: ServicesDep,
    store: Batches,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Store the batch as `validating` and hand it to a worker, which fans it out."""

    async def accept() -> Answer:
        expires = body.output_expires_after
        batch = await store.create(
            key_id,
            body.input_file_id,
            body.endpoint,
            body.metadata,
            expires.seconds if expires else None,
        )
        try:
            await _dispatch(services, batch["id"])
        except Exception as exc:
            log.warning("dispatch of batch %s failed: %s", batch["id"], exc)
            detail = f"the broker refused the batch: {exc}"
            await store.fail(batch["id"], "queue_unavailable", detail)
            raise QueueUnavailable("the job queue is unreachable; try again later") from exc
        return Answer(200, jsonable_encoder(batch), {})

    return await answer_once(services, key_id, idempotency_key, body, accept)


@router.get("")
async def list_batches(
    key_id: CurrentKey,
    store: Batches,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """The caller's batches, newest first."""
    return await store.list(key_id, after, limit)


@router.get("/{batch_id}")
async def get_batch(batch_id: str, key_id: CurrentKey, store: Batches) -> dict[str, Any]:
    found = await store.get(key_id, batch_id)
    if found is None:
        raise NotFound(f"no batch {batch_id!r}")
    return found


@router.post("/{batch_id}/cancel", responses=errors(409))
async def cancel_batch(
    batch_id: str, key_id: CurrentKey, services: ServicesDep, store: Batches
) -> dict[str, Any]:
    """`cancelling` now; `cancelled` once its running jobs have stopped."""
    result = await store.cancel(key_id, batch_id)
    if result is None:
        raise NotFound(f"no batch {batch_id!r}")
    status = result.batch["status"]
    if not result.started:
        if status in ("cancelling", "cancelled"):
            return result.batch
        raise Conflict(
            f"the batch is {status}; only a validating or in-progress one can be cancelled"
        )
    await _signal_jobs(services, result)
    try:
        await _dispatch(services, batch_id, force=True)
    except Exception as exc:  # the sweep hands it over later
        log.warning("dispatch of cancelled batch %s failed: %s", batch_id, exc)
    return result.batch


async def _dispatch(services: Services, batch_id: str, force: bool = False) -> None:
    """Send the batch to the workers, and tell the sweep it was just sent."""
    seconds = redispatch_seconds(services.settings.reaper_interval_seconds)
    key = redis_keys.batch_dispatched(batch_id)
    fresh = await services.redis.set(key, b"1", nx=True, ex=seconds)
    if fresh or force:
        await run_in_threadpool(send_advance, services.celery, batch_id)


async def _signal_jobs(services: Services, result: Cancellation) -> None:
    """Stop flags for running jobs; end the event streams of the jobs cancelled in SQL."""
    if not result.running_job_ids and not result.cancelled_jobs:
        return
    ttl = services.settings.result_ttl_seconds
    async with services.redis.pipeline(transaction=False) as pipe:
        if result.running_job_ids:
            ttl_flags = services.settings.visibility_timeout_seconds
            request_stops(pipe, result.running_job_ids, ttl_flags)
        for job in result.cancelled_jobs:
            stream = redis_keys.job_stream(job.id)
            pipe.xadd(stream, terminal_entry(job))  # type: ignore[arg-type]
            pipe.expire(stream, ttl)
        await pipe.execute()
