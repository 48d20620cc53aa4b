"""`POST /v1/embeddings`: OpenAI's embeddings API on the job queue.

Every request becomes one job of kind "embed" (high priority unless `priority` says
otherwise); a worker runs it, merged with jobs that arrive alongside into one model call.
This process never loads a model: it waits for the job and answers in OpenAI's shape.
The job id travels in `x-inferq-job-id`; past `sync_wait_seconds` the answer is a 504
naming the job, whose vectors `GET /v1/jobs/{id}` returns as `result.embeddings`.
"""

from __future__ import annotations

import base64
import struct
from typing import TYPE_CHECKING, Any, Literal

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from inferq.api.completions import JOB_HEADER
from inferq.api.deps import CurrentCaller, ServicesDep, require_json
from inferq.api.openapi import errors
from inferq.api.submission import failure, submit, wait_finished
from inferq.config import Settings
from inferq.errors import InvalidRequest
from inferq.jobs.schemas import Job, Priority
from inferq.jobs.store import NewJob
from inferq.providers.registry import ModelSpec

if TYPE_CHECKING:
    pass

router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    dependencies=[Depends(require_json)],
    responses=errors(404, 415, 429, 502, 504),
)


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings`. Token-id inputs are not accepted: the upstream model's
    tokenizer is not the client's."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    # Accepted as OpenAI does; inferq has no use for it.
    user: str | None = Field(default=None, max_length=256)
    # inferq's own: the queue priority of the job behind this request.
    priority: Priority = "high"

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


@router.post("/embeddings")
async def create_embeddings(
    body: EmbeddingRequest, caller: CurrentCaller, services: ServicesDep
) -> Response:
    """Vectors for `input`, as OpenAI's list of `embedding` objects."""
    spec = services.registry.get(body.model, kind="embedding")
    check_embedding_request(body, spec, services.settings)
    new = NewJob(
        key_id=caller.key_id,
        model=spec.name,
        priority=body.priority,
        payload={"input": body.texts},
        kind="embed",
    )
    # Admitted like any job: the key's rate, token and active-job limits apply.
    job = await submit(services, new, spec.pool, caller, prompt_texts=body.texts)
    headers = {JOB_HEADER: job.id}
    final = await wait_finished(services, caller.key_id, job.id, headers)
    vectors = (final.result or {}).get("embeddings")
    if final.status != "succeeded" or not isinstance(vectors, list):
        raise failure(final, headers)
    rendered = render(final, vectors, body.encoding_format)
    return Response(orjson.dumps(rendered), media_type="application/json", headers=headers)


def check_embedding_request(body: EmbeddingRequest, spec: ModelSpec, settings: Settings) -> None:
    """Raise InvalidRequest listing every limit the request breaks."""
    errors: list[dict[str, Any]] = []
    texts = body.texts
    if not texts:
        errors.append(_error(["input"], "must not be empty"))
    if len(texts) > settings.max_embedding_inputs:
        errors.append(_error(["input"], f"at most {settings.max_embedding_inputs} inputs"))
    for i, text in enumerate(texts[: settings.max_embedding_inputs]):
        loc: list[str | int] = ["input"] if isinstance(body.input, str) else ["input", i]
        if not text:
            errors.append(_error(loc, "must not be an empty string"))
        elif len(text) > settings.max_embedding_input_chars:
            errors.append(_error(loc, f"at most {settings.max_embedding_input_chars} characters"))
    if body.dimensions is not None and body.dimensions != spec.dimensions:
        errors.append(_error(["dimensions"], _fixed_size(spec)))
    if errors:
        raise InvalidRequest(f"invalid {_fields(errors)}: {errors[0]['msg']}", errors=errors)


def _fixed_size(spec: ModelSpec) -> str:
    # No model here can shorten its vectors, so `dimensions` may only restate the size.
    if spec.dimensions is None:
        return f"model {spec.name!r} does not declare its vector size; omit `dimensions`"
    return f"model {spec.name!r} makes {spec.dimensions}-dimensional vectors only"


def _error(loc: list[str | int], msg: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": "invalid_value"}


def _fields(errors: list[dict[str, Any]]) -> str:
    return ", ".join(dict.fromkeys(".".join(str(p) for p in e["loc"][1:]) for e in errors))


def render(job: Job, vectors: list[list[float]], encoding: str) -> dict[str, Any]:
    """A finished embed job as OpenAI's embeddings response."""
    prompt_tokens = job.usage.prompt_tokens if job.usage else 0
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
            for i, vector in enumerate(vectors)
        ],
        "model": job.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    # As OpenAI: the vector's float32 values, little-endian, in base64.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
