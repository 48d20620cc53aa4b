"""Limits a job request must respect beyond its types; they come from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferq.config import Settings
from inferq.errors import InferqError, InvalidRequest
from inferq.jobs.schemas import JobCreate

if TYPE_CHECKING:
    from inferq.providers.registry import ModelRegistry


def _error(loc: list[str | int], msg: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": "limit_exceeded"}


def limit_errors(
    job: JobCreate, settings: Settings, model_max_tokens: int | None
) -> list[dict[str, Any]]:
    """Every limit the request breaks, in the shape of validation errors."""
    errors: list[dict[str, Any]] = []
    if job.prompt is not None and len(job.prompt) > settings.max_prompt_chars:
        errors.append(_error(["prompt"], f"at most {settings.max_prompt_chars} characters"))
    messages = job.messages or []
    if len(messages) > settings.max_messages:
        errors.append(_error(["messages"], f"at most {settings.max_messages} messages"))
    for i, message in enumerate(messages[: settings.max_messages]):
        if len(message.content) > settings.max_message_chars:
            msg = f"at most {settings.max_message_chars} characters"
            errors.append(_error(["messages", i, "content"], msg))
    cap = min(settings.max_tokens_limit, model_max_tokens or settings.max_tokens_limit)
    if job.max_tokens > cap:
        errors.append(_error(["max_tokens"], f"at most {cap} for model {job.model!r}"))
    stop = job.stop if isinstance(job.stop, list) else []
    if len(stop) > settings.max_stop_sequences:
        errors.append(_error(["stop"], f"at most {settings.max_stop_sequences} sequences"))
    if len(job.metadata) > settings.max_metadata_keys:
        errors.append(_error(["metadata"], f"at most {settings.max_metadata_keys} keys"))
    limit = settings.max_metadata_value_chars
    for key, value in job.metadata.items():
        if len(key) > 64 or len(value) > limit:
            errors.append(_error(["metadata", key], f"keys ≤ 64 and values ≤ {limit} characters"))
    return errors


def check_embedding_options(job: JobCreate, settings: Settings, registry: ModelRegistry) -> None:
    """A semantic cache and retrieval each need their embedding model in the registry."""
    needs = []
    if job.cache == "semantic":
        needs.append(
            (
                "cache",
                "the semantic cache",
                "INFERQ_SEMANTIC_CACHE_MODEL",
                settings.semantic_cache_model,
            )
        )
    if job.rag is not None:
        needs.append(
            ("rag", "retrieval", "INFERQ_RAG_EMBEDDING_MODEL", settings.rag_embedding_model)
        )
    errors = [
        _error([field], f"{what} is off ({variable} names no embedding model)")
        for field, what, variable, name in needs
        if not is_embedding_model(registry, name)
    ]
    if errors:
        raise InvalidRequest(errors[0]["msg"], errors=errors)


def is_embedding_model(registry: ModelRegistry, name: str | None) -> bool:
    if name is None:
        return False
    try:
        registry.get(name, kind="embedding")
    except InferqError:
        return False
    return True


def check_limits(job: JobCreate, settings: Settings, model_max_tokens: int | None) -> None:
    """Raise InvalidRequest listing every broken limit."""
    errors = limit_errors(job, settings, model_max_tokens)
    if errors:
        raise InvalidRequest("the request exceeds a limit", errors=errors)
