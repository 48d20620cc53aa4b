"""`POST /v1/chat/completions` and `POST /v1/completions`: OpenAI's API on the job queue.

Every request becomes a job (high priority unless `priority` says otherwise); this process
never runs inference. The job id travels in `x-inferq-job-id`, so a client can fall back
to `/v1/jobs/{id}` and its event stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from inferq.api.deps import CurrentCaller, IdempotencyKey, ServicesDep, require_json
from inferq.api.openapi import errors
from inferq.api.submission import answer_once, cancel, failure, submit, wait_finished
from inferq.idempotency import Answer
from inferq.jobs.schemas import TERMINAL_STATUSES, Job
from inferq.jobs.store import NewJob
from inferq.jobs.validation import check_embedding_options
from inferq.keys import Caller
from inferq.oai import format
from inferq.oai.schemas import ChatCompletionRequest, CompletionRequest, checked_job
from inferq.streams import TERMINAL_EVENTS, read_after

if TYPE_CHECKING:
    from inferq.app import Services

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    dependencies=[Depends(require_json)],
    responses=errors(404, 409, 415, 429, 502, 504),
)
Request = ChatCompletionRequest | CompletionRequest
JOB_HEADER = "x-inferq-job-id"
CACHE_HEADER = "x-inferq-cache"


@router.post("/chat/completions")
async def chat_completions(
    body: ChatCompletionRequest,
    caller: CurrentCaller,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A chat completion, streamed (`stream: true`) or whole."""
    return await _complete(body, caller, services, True, idempotency_key)


@router.post("/completions")
async def completions(
    body: CompletionRequest,
    caller: CurrentCaller,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A text completion of `prompt`, streamed or whole."""
    return await _complete(body, caller, services, False, idempotency_key)


async def _complete(
    body: Request, caller: Caller, services: Services, chat: bool, idempotency_key: str | None
) -> Response:
    if body.stream:
        job = await _submit(body, caller, services)
        chunks = _chunks(services, caller.key_id, job, chat, body.include_usage)
        return StreamingResponse(
            _sse(chunks),
            media_type="text/event-stream",
            headers={JOB_HEADER: job.id, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def complete() -> Answer:
        job = await _submit(body, caller, services)
        headers = {JOB_HEADER: job.id}
        final = await wait_finished(services, caller.key_id, job.id, headers)
        if final.status == "succeeded":
            rendered = format.chat_completion(final) if chat else format.text_completion(final)
            if body.cache != "off":  # asked for: say whether it answered
                headers[CACHE_HEADER] = "hit" if final.cached else "miss"
            return Answer(200, rendered, headers)
        raise failure(final, headers)

    return await answer_once(services, caller.key_id, idempotency_key, body, complete)


async def _submit(body: Request, caller: Caller, services: Services) -> Job:
    spec = services.registry.get(body.model)
    asked, history = await services.conversations.with_history(
        caller.key_id, body.to_job(), spec, services.settings
    )
    job_request = checked_job(asked, spec, services.settings)
    check_embedding_options(job_request, services.settings, services.registry)
    return await submit(
        services,
        NewJob.generation(caller.key_id, job_request, stream=body.stream, history=history),
        spec.pool,
        caller,
        prompt_texts=job_request.texts(),
        max_tokens=job_request.max_tokens,
    )


async def _sse(chunks: AsyncIterator[dict[str, Any] | str]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        data = chunk.encode() if isinstance(chunk, str) else orjson.dumps(chunk)
        yield b"data: " + data + b"\n\n"


async def _chunks(
    services: Services, key_id: str, job: Job, chat: bool, include_usage: bool
) -> AsyncIterator[dict[str, Any] | str]:
    """OpenAI chunks from the job's stream; `[DONE]` only after a success.

    A failure, a cancellation, or a restart of the job after text was already sent ends
    the stream with an error object instead, so it never looks like a clean completion.
    A success always carries the whole text: what the stream's deltas did not deliver
    (the worker saves the row before its last entries reach the stream, and a worker cut
    off from Redis never writes them) comes from the job before the finish.
    """
    piece: Callable[..., dict[str, Any]] = format.chat_chunk if chat else format.text_chunk
    finished = False
    sent = 0  # characters of text delivered
    try:
        if chat:
            yield format.chat_chunk(job, role=True, content="")
        cursor = "0"
        while True:
            events = await read_after(services.redis, job.id, cursor, block_ms=2000)
            if not events:
                row = await services.jobs.get(key_id, job.id)
                if row is not None and row.status in TERMINAL_STATUSES:
                    events = await read_after(services.redis, job.id, cursor, block_ms=200)
                    if not events:  # the terminal event never reached the stream
                        async for chunk in _ending(row, piece, include_usage, chat, sent):
                            yield chunk
                        finished = True
                        return
                continue
            for event in events:
                cursor = event.id
                if event.event == "delta":
                    text = orjson.loads(event.data)["text"]
                    sent += len(text)
                    yield piece(job, content=text) if chat else piece(job, text=text)
                elif event.event == "reset" and sent:
                    finished = True
                    yield format.error_body(
                        "the job restarted after a worker failure; the partial output above is "
                        f"void. Fetch the result from /v1/jobs/{job.id}",
                        "api_error",
                        "job_restarted",
                        job_id=job.id,
                    )
                    return
                elif event.event in TERMINAL_EVENTS:
                    final = Job.model_validate_json(event.data)
                    async for chunk in _ending(final, piece, include_usage, chat, sent):
                        yield chunk
                    finished = True
                    return
    finally:
        if not finished and services.settings.stream_disconnect == "cancel":
            _cancel_in_background(services, key_id, job.id)


async def _ending(
    final: Job, piece: Callable[..., dict[str, Any]], include_usage: bool, chat: bool, sent: int
) -> AsyncIterator[dict[str, Any] | str]:
    if final.status != "succeeded":
        if final.status == "cancelled":
            yield format.error_body(
                "the job was cancelled", "api_error", "cancelled", job_id=final.id
            )
        else:
            yield format.job_error(final)
        return
    rest = final.output.text[sent:] if final.output else ""
    if rest:
        yield piece(final, content=rest) if chat else piece(final, text=rest)
    yield piece(final, finish=format.finish_reason(final))
    if include_usage:
        yield piece(final, empty=True, with_usage=format.usage(final))
    yield "[DONE]"


def _cancel_in_background(services: Services, key_id: str, job_id: str) -> None:
    """The client went away mid-stream: stop the job (the request task is being torn down)."""

    async def run() -> None:
        try:
            await cancel(services, key_id, job_id)
        except Exception:
            log.exception("could not cancel job %s after a disconnect", job_id)

    task = asyncio.get_running_loop().create_task(run())
    services.background.add(task)
    task.add_done_callback(services.background.discard)
