"""Jobs rendered as OpenAI responses and stream chunks."""

from __future__ import annotations

from typing import Any

from inferq.jobs.schemas import Job

FINISH_REASONS = {"stop": "stop", "length": "length"}


def usage(job: Job) -> dict[str, int]:
    prompt = job.usage.prompt_tokens if job.usage else 0
    completion = job.usage.completion_tokens if job.usage else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(job: Job) -> str:
    reason = job.output.finish_reason if job.output else None
    return FINISH_REASONS.get(reason or "stop", "stop")


def chat_completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def completion_id(job_id: str) -> str:
    return f"cmpl-{job_id}"


def chat_completion(job: Job) -> dict[str, Any]:
    """A finished job as a `chat.completion` object."""
    return {
        "id": chat_completion_id(job.id),
        "object": "chat.completion",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": job.output.text if job.output else "",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": finish_reason(job),
            }
        ],
        "usage": usage(job),
        "system_fingerprint": None,
    }


def text_completion(job: Job) -> dict[str, Any]:
    """A finished job as a `text_completion` object."""
    return {
        "id": completion_id(job.id),
        "object": "text_completion",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "choices": [
            {
                "index": 0,
                "text": job.output.text if job.output else "",
                "logprobs": None,
                "finish_reason": finish_reason(job),
            }
        ],
        "usage": usage(job),
    }


def chat_chunk(
    job: Job,
    *,
    content: str | None = None,
    role: bool = False,
    finish: str | None = None,
    with_usage: dict[str, int] | None = None,
    empty: bool = False,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; `empty` gives the usage-only chunk (no choices)."""
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    chunk: dict[str, Any] = {
        "id": chat_completion_id(job.id),
        "object": "chat.completion.chunk",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "choices": []
        if empty
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage is not None or empty:
        chunk["usage"] = with_usage
    return chunk


def text_chunk(
    job: Job,
    *,
    text: str = "",
    finish: str | None = None,
    with_usage: dict[str, int] | None = None,
    empty: bool = False,
) -> dict[str, Any]:
    """One streamed `text_completion` object."""
    chunk: dict[str, Any] = {
        "id": completion_id(job.id),
        "object": "text_completion",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "choices": []
        if empty
        else [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage is not None or empty:
        chunk["usage"] = with_usage
    return chunk


def error_body(message: str, type_: str, code: str | None, **extra: Any) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code, **extra}}


def job_error(job: Job) -> dict[str, Any]:
    """A failed job as an OpenAI error object: type api_error (the provider's failure),
    or invalid_request_error when the provider found the request invalid."""
    error = job.error
    return error_body(
        error.message if error else "the job failed",
        "invalid_request_error" if job.refused_as_invalid else "api_error",
        error.type if error else "job_failed",
        job_id=job.id,
    )
