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
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
from langchain_core.caches import BaseCache
from langchain_core.globals import get_debug, get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
    SystemMessage,
)
from langsmith.utils import tracing_is_enabled

from inferq.errors import (
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from inferq.observability.jobs import observe_call
from inferq.providers.request import GenerationRequest


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

    # The worker pool a model of this provider runs in unless its registry entry says.
    default_pool: ClassVar[str] = "io"
    # The environment variable the registry reads an API key from when `api_key` is unset.
    api_key_env: ClassVar[str | None] = None
    # Params without which the model cannot be built.
    required_params: ClassVar[tuple[str, ...]] = ()
    # Whether a request nobody streams is made as one non-streaming call. Off for
    # providers whose calls must stop on cancel or deadline mid-generation (a streamed
    # call checks between chunks; a whole call only before and after).
    whole_calls: ClassVar[bool] = True
    # Whether the model runs inside the worker process. Its failures are then this host's
    # (a bad file, no memory), and the circuit breaker keeps one circuit per host for it.
    in_process: ClassVar[bool] = False

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    _model: BaseChatModel | None = field(default=None, init=False, repr=False)
    _direct: bool = field(default=False, init=False, repr=False)
    _direct_whole: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Raise ValueError when `params` cannot work, so a bad registry entry fails at
        load rather than on its first job. Cheap: builds nothing."""
        missing = [name for name in cls.required_params if not params.get(name)]
        if missing:
            raise ValueError(f"missing params: {', '.join(missing)}")

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

    def stream_kwargs(
        self, request: GenerationRequest, cancel: threading.Event | None
    ) -> dict[str, Any]:
        """Keyword arguments of the chat model's `stream`: the call's parameters, and
        whatever else a provider's model takes (the simulated one takes the stop event)."""
        return self.call_kwargs(request)

    def require_api_key(self) -> str:
        """The API key the registry resolved into `params`, or an error saying where to
        put one (retrying cannot help, so not a retryable error)."""
        key = self.params.get("api_key")
        if not key:
            env = self.params.get("api_key_env") or self.api_key_env
            raise ProviderError(f"model {self.name!r} has no API key: set {env} or `api_key`")
        return str(key)

    @property
    def model(self) -> BaseChatModel:
        with self._lock:
            if self._model is None:
                self._model = self.build_chat_model()
                self._direct = streams_directly(self._model)
                self._direct_whole = generates_directly(self._model)
            return self._model

    def stream(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[StreamEvent]:
        """Yield `Delta`s as the model produces them, then exactly one `Finish`.

        Stops early (finish_reason "cancelled") when `cancel` is set. The call is traced
        and its token timings and errors are counted.
        """
        return observe_call(self.name, type(self).__name__, self._events(request, cancel))

    def _events(
        self, request: GenerationRequest, cancel: threading.Event | None
    ) -> Iterator[StreamEvent]:
        if cancel is not None and cancel.is_set():
            yield Finish(finish_reason="cancelled", prompt_tokens=0, completion_tokens=0)
            return
        if not request.stream and self.whole_calls:
            yield from self._whole(request, cancel)
            return
        usage = {"prompt": 0, "completion": 0}
        finish_reason = "stop"
        chunks: Iterator[Any] = iter(())
        try:
            # Inside the try: building the model (weights, SDK client) can fail too.
            chunks = self._chunks(
                to_langchain_messages(request), request.stop, self.stream_kwargs(request, cancel)
            )
            for chunk in chunks:
                if cancel is not None and cancel.is_set():
                    finish_reason = "cancelled"
                    break
                text = str(chunk.text) if isinstance(chunk, AIMessageChunk) else str(chunk.content)
                if text:
                    yield Delta(text)
                if isinstance(chunk, AIMessageChunk) and chunk.usage_metadata:
                    # Chunks' usage adds up (LangChain's contract): a provider may report
                    # input tokens on one chunk and output tokens on a later one.
                    usage["prompt"] += chunk.usage_metadata.get("input_tokens", 0)
                    usage["completion"] += chunk.usage_metadata.get("output_tokens", 0)
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
            prompt_tokens=usage["prompt"],
            completion_tokens=usage["completion"],
        )

    def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Iterator[BaseMessageChunk]:
        model = self.model
        if not self._direct:
            return model.stream(messages, stop=stop, **kwargs)
        return _direct_chunks(model._stream(messages, stop=stop, **kwargs))

    def _whole(
        self, request: GenerationRequest, cancel: threading.Event | None
    ) -> Iterator[StreamEvent]:
        """One non-streaming call, told as one Delta and the Finish."""
        try:
            message = self._message(
                to_langchain_messages(request), request.stop, self.call_kwargs(request)
            )
        except ProviderError:
            raise
        except Exception as exc:
            raise self.map_error(exc) from exc
        usage = getattr(message, "usage_metadata", None) or {}
        prompt_tokens = usage.get("input_tokens", 0)
        completion_tokens = usage.get("output_tokens", 0)
        if cancel is not None and cancel.is_set():
            # Stopped while the call ran: the answer came too late to count.
            yield Finish("cancelled", prompt_tokens, completion_tokens)
            return
        text = str(message.text) if isinstance(message, AIMessage) else str(message.content)
        if text:
            yield Delta(text)
        yield Finish(
            finish_reason=_finish_reason(message.response_metadata) or "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def _message(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> BaseMessage:
        model = self.model
        if not self._direct_whole:
            return model.invoke(messages, stop=stop, **kwargs)
        generation = model._generate(messages, stop=stop, **kwargs).generations[0]
        message = generation.message
        if generation.generation_info:  # where `invoke` would have put it (a finish reason)
            message.response_metadata = {**generation.generation_info, **message.response_metadata}
        return message

    def close(self) -> None:
        """Release what the model holds (sockets, weights)."""
        self._model = None


def streams_directly(model: BaseChatModel) -> bool:
    """Whether a stream may call the model's own `_stream` rather than its `stream`.

    `stream` wraps `_stream` in LangChain's run bookkeeping: a callback manager, a run id
    and metadata on every chunk, and all chunks merged into one generation at the end,
    for callbacks to see. inferq passes no callbacks (its traces are OpenTelemetry
    spans), and that bookkeeping was half the CPU of a 20-chunk stream of the simulated
    model (0.64 of 1.23 ms). So it is skipped when nothing would see it (`_wrapper_unneeded`)
    and the model streams by itself (its `_stream` is its own and streaming is not
    disabled, the cases where `stream` would call `invoke`).
    """
    return (
        type(model)._stream is not BaseChatModel._stream
        and not model.disable_streaming
        and _wrapper_unneeded(model)
    )


def generates_directly(model: BaseChatModel) -> bool:
    """Whether a whole call may call the model's own `_generate` rather than `invoke`.

    The same bookkeeping wraps `invoke`: through `OpenAIProvider` against a local mock,
    a whole call cost 671 µs of CPU that way and 477 calling `_generate` (a non-stream
    job's whole provider call, paid in the worker under one GIL). Skipped when nothing
    would see it, no LangChain cache would answer or keep the call, and the model would
    not stream on its own (`streaming=True` makes `invoke` stream and merge the chunks).
    """
    cache = model.cache
    cached = (
        cache is True
        or isinstance(cache, BaseCache)
        or (cache is None and get_llm_cache() is not None)
    )
    return (
        _wrapper_unneeded(model) and not cached and getattr(model, "streaming", False) is not True
    )


def _wrapper_unneeded(model: BaseChatModel) -> bool:
    """LangChain's wrapper would do nothing anyone sees: no callbacks, verbose or debug
    output, LangSmith tracing (read when the model is built), rate limiter, or v1 output
    on the model."""
    return (
        model.rate_limiter is None
        and not model.callbacks
        and not model.verbose
        and model.output_version != "v1"
        and not get_debug()
        and not tracing_is_enabled()
    )


def _direct_chunks(chunks: Iterator[Any]) -> Iterator[BaseMessageChunk]:
    """The messages of `_stream`'s generation chunks, with each chunk's generation info
    in its response metadata as `stream` puts it (where a finish reason may be)."""
    try:
        for chunk in chunks:
            message = chunk.message
            if chunk.generation_info:
                message.response_metadata = {**chunk.generation_info, **message.response_metadata}
            yield message
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:  # the HTTP stream behind it ends now, not when collected
            close()


def _finish_reason(metadata: Mapping[str, Any]) -> str | None:
    reason = metadata.get("finish_reason") or metadata.get("stop_reason")
    if reason is None:
        return None
    # Anthropic says end_turn / max_tokens / stop_sequence; report OpenAI's words.
    return {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}.get(
        str(reason), str(reason)
    )


def status_error(status: int, message: str, headers: Mapping[str, str]) -> ProviderError:
    """The ProviderError for an HTTP error answer: 429 rate-limited (with its
    Retry-After), 408 and 5xx retryable, 400/413/422 the request found invalid, any
    other 4xx a refusal (of our credentials, or of the model's name)."""
    detail = f"{status}: {message}"
    if status == 429:
        return ProviderRateLimited(detail, retry_after=retry_after_seconds(headers))
    if status == 408:
        return ProviderTimeout(detail)
    if status >= 500:
        return ProviderUnavailable(detail)
    if status in (400, 413, 422):
        return ProviderInvalidRequest(detail)
    return ProviderRejected(detail)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """How long a 429 asks us to wait: `retry-after-ms`, or `retry-after` in seconds or
    as an HTTP date. None when absent or unreadable."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


Provider = ChatModelProvider


def http_timeout(params: Mapping[str, Any]) -> httpx.Timeout:
    """Per-model HTTP timeouts: `connect_timeout_seconds` (5) and `timeout_seconds` (60),
    the latter bounding each read and write. The job's total time is bounded elsewhere."""
    read = float(params.get("timeout_seconds", 60))
    return httpx.Timeout(read, connect=float(params.get("connect_timeout_seconds", 5)))
