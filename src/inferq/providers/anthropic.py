"""Anthropic's Messages API via ChatAnthropic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import SecretStr

from inferq.errors import (
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from inferq.providers.base import ChatModelProvider, retry_after_seconds
from inferq.providers.request import GenerationRequest

# The SDKs are imported on first use (see openai.py).
if TYPE_CHECKING:
    from langchain_anthropic import ChatAnthropic

# Anthropic's error types (the body's `error.type`) that say "try again later". They
# also arrive inside a 200 event stream, where the status code says nothing.
_UNAVAILABLE_TYPES = frozenset({"overloaded_error", "api_error"})


@dataclass
class AnthropicProvider(ChatModelProvider):
    """Params: `model`, `api_key` (resolved by the registry, from `api_key_env` by
    default), `base_url`, `timeout_seconds` (60), `max_tokens` (the default cap; each
    job sends its own)."""

    api_key_env: ClassVar[str | None] = "ANTHROPIC_API_KEY"
    required_params: ClassVar[tuple[str, ...]] = ("model",)

    def build_chat_model(self) -> ChatAnthropic:
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(
            model=self.params["model"],
            api_key=SecretStr(self.require_api_key()),
            base_url=self.params.get("base_url"),
            # Retries are the job queue's business, not the SDK's.
            max_retries=0,
            timeout=float(self.params.get("timeout_seconds", 60)),
            max_tokens=int(self.params.get("max_tokens", 1024)),
        )

    def call_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = super().call_kwargs(request)
        # The Messages API has no seed.
        kwargs.pop("seed", None)
        return kwargs

    def map_error(self, exc: Exception) -> ProviderError:
        return map_anthropic_error(exc)


def map_anthropic_error(exc: Exception) -> ProviderError:
    """The ProviderError for an exception of the `anthropic` SDK."""
    import anthropic

    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTimeout(detail)
    if not isinstance(exc, anthropic.APIStatusError):
        # APIConnectionError, and anything else on the way (a broken stream).
        return ProviderUnavailable(detail)
    kind, message = _error_body(exc.body)
    if kind == "rate_limit_error" or exc.status_code == 429:
        return ProviderRateLimited(detail, retry_after=retry_after_seconds(exc.response.headers))
    if kind in _UNAVAILABLE_TYPES or exc.status_code >= 500:
        return ProviderUnavailable(detail)
    if kind == "timeout_error" or exc.status_code == 408:
        return ProviderTimeout(detail)
    refused = f"{exc.status_code} {kind or 'error'}: {message or exc.message}"
    if kind in ("invalid_request_error", "request_too_large") or exc.status_code in (400, 413):
        return ProviderInvalidRequest(refused)
    return ProviderRejected(refused)


def _error_body(body: object) -> tuple[str | None, str | None]:
    """`error.type` and `error.message` of an Anthropic error body."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    kind, message = error.get("type"), error.get("message")
    return (
        kind if isinstance(kind, str) else None,
        message if isinstance(message, str) else None,
    )
