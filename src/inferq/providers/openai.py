"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp's server, Ollama) via ChatOpenAI
(`WireChatOpenAI`: its chat-completions exchange made by httpx and orjson)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import SecretStr

from inferq.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)
from inferq.providers.base import ChatModelProvider, http_timeout, status_error
from inferq.providers.request import GenerationRequest

# The SDKs are imported on first use: they take about a second to import, and the API,
# the CLI and workers that serve other providers never need them.
if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI


@dataclass
class OpenAIProvider(ChatModelProvider):
    """Params: `model`, `base_url` (an OpenAI-compatible server), `api_key` (resolved by
    the registry, from `api_key_env` by default), `timeout_seconds` (60, per read),
    `connect_timeout_seconds` (5), and
    `max_tokens_param`: the request field for the output cap.

    OpenAI now calls that field `max_completion_tokens`, which ChatOpenAI always sends;
    several compatible servers (llama-cpp-python's among them) know only `max_tokens`
    and would ignore the cap. It defaults to `max_tokens` when `base_url` is set.
    """

    api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    required_params: ClassVar[tuple[str, ...]] = ("model",)

    def build_chat_model(self) -> ChatOpenAI:
        import httpx
        import openai

        from inferq.providers.openai_wire import WireChatOpenAI

        timeout = http_timeout(self.params)
        return WireChatOpenAI(
            model=self.params["model"],
            base_url=self.params.get("base_url"),
            api_key=SecretStr(self._api_key()),
            # Retries are the job queue's business, not the SDK's.
            max_retries=0,
            # The SDK's own Timeout: its HTTP client (httpx2, a fork) refuses httpx's
            # since httpx2 2.17.
            timeout=openai.Timeout(timeout.read, connect=timeout.connect),
            stream_usage=True,
            # The SDK's own default limits: a worker holds up to a thousand calls in flight.
            wire_client=httpx.Client(
                timeout=timeout,
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            ),
        )

    def _api_key(self) -> str:
        if self.params.get("base_url") and not self.params.get("api_key"):
            # Local OpenAI-compatible servers usually want no key; the SDK needs one.
            return "unused"
        return self.require_api_key()

    def call_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = super().call_kwargs(request)
        if self._max_tokens_param() == "max_tokens":
            # ChatOpenAI renames a max_tokens kwarg; extra_body goes out as written.
            kwargs["extra_body"] = {"max_tokens": kwargs.pop("max_tokens")}
        return kwargs

    def _max_tokens_param(self) -> str:
        default = "max_tokens" if self.params.get("base_url") else "max_completion_tokens"
        return str(self.params.get("max_tokens_param", default))

    def map_error(self, exc: Exception) -> ProviderError:
        return map_openai_error(exc)


def map_openai_error(exc: Exception) -> ProviderError:
    """The ProviderError for an exception of the `openai` SDK."""
    import openai

    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(detail)
    if isinstance(exc, openai.APIStatusError):
        return status_error(exc.status_code, exc.message, exc.response.headers)
    # APIConnectionError, and anything else on the way (a broken stream).
    return ProviderUnavailable(detail)
