"""The provider contract: a LangChain chat model behind one small streaming interface.

A provider is one subclass of `ChatModelProvider` that builds a LangChain `BaseChatModel`
from its registry parameters and says how that SDK's exceptions map onto inferq's
`ProviderError` family. The worker only ever calls `Provider.stream`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)

from inferq.errors import ProviderError, ProviderUnavailable


@dataclass(frozen=True)
class GenerationRequest:
    """What a job asks a model for: either chat `messages` or a raw `prompt`."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of generated text, in order."""

    text: str


@dataclass(frozen=True)
class Finish:
    """The end of a generation: why it stopped and what it cost."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


StreamEvent = Delta | Finish


def to_langchain_messages(request: GenerationRequest) -> list[BaseMessage]:
    """Chat messages as LangChain messages; a raw prompt becomes one user message."""
    if request.messages is None:
        return [HumanMessage(content=request.prompt or "")]
    kinds: dict[str, type[BaseMessage]] = {
        "system": SystemMessage,
        "user": HumanMessage,
        "assistant": AIMessage,
    }
    return [kinds[m["role"]](content=m["content"]) for m in request.messages]


@dataclass
class ChatModelProvider(ABC):
    """A provider backed by a LangChain chat model built from registry `params`."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    _model: BaseChatModel | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @abstractmethod
    def build_chat_model(self) -> BaseChatModel:
        """Create the LangChain chat model (called once, on first use)."""

    def map_error(self, exc: Exception) -> ProviderError:
        """Translate an SDK exception into the ProviderError family."""
        return ProviderUnavailable(f"{type(exc).__name__}: {exc}")

    def call_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        """Per-call parameters passed to the chat model's `stream`."""
        kwargs: dict[str, Any] = {"max_tokens": request.max_tokens}
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.seed is not None:
            kwargs["seed"] = request.seed
        return kwargs

    @property
    def model(self) -> BaseChatModel:
        with self._lock:
            if self._model is None:
                self._model = self.build_chat_model()
            return self._model

    def stream(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[StreamEvent]:
        """Yield `Delta`s as the model produces them, then exactly one `Finish`.

        Stops early (finish_reason "cancelled") when `cancel` is set.
        """
        completion_chars = 0
        usage: dict[str, int] = {}
        finish_reason = "stop"
        chunks = self.model.stream(
            to_langchain_messages(request), stop=request.stop, **self.call_kwargs(request)
        )
        try:
            for chunk in chunks:
                if cancel is not None and cancel.is_set():
                    finish_reason = "cancelled"
                    break
                text = chunk.text if isinstance(chunk, AIMessageChunk) else str(chunk.content)
                if text:
                    completion_chars += len(text)
                    yield Delta(text)
                if isinstance(chunk, AIMessageChunk) and chunk.usage_metadata:
                    usage["prompt"] = chunk.usage_metadata.get("input_tokens", 0)
                    usage["completion"] = chunk.usage_metadata.get("output_tokens", 0)
                reason = _finish_reason(chunk.response_metadata)
                if reason:
                    finish_reason = reason
        except ProviderError:
            raise
        except Exception as exc:
            raise self.map_error(exc) from exc
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        yield Finish(
            finish_reason=finish_reason,
            prompt_tokens=usage.get("prompt", 0),
            completion_tokens=usage.get("completion", 0),
        )

    def close(self) -> None:
        """Release what the model holds (sockets, weights)."""
        self._model = None


def _finish_reason(metadata: Mapping[str, Any]) -> str | None:
    reason = metadata.get("finish_reason") or metadata.get("stop_reason")
    if reason is None:
        return None
    # Anthropic says end_turn / max_tokens / stop_sequence; report OpenAI's words.
    return {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}.get(
        str(reason), str(reason)
    )


Provider = ChatModelProvider
