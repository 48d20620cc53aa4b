"""The provider contract's shared behaviour."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, cast

import pytest
from langchain_core.caches import BaseCache, InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from inferq.errors import ProviderInvalidRequest, ProviderRejected
from inferq.providers.base import (
    ChatModelProvider,
    Delta,
    StreamEvent,
    retry_after_seconds,
    status_error,
)
from inferq.providers.llamacpp import LlamaCppProvider
from inferq.providers.request import GenerationRequest
from inferq.providers.sim import SimProvider
from tests.providers.support import collect


def test_cancel_set_before_the_start_finishes_without_calling_the_model(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    provider = SimProvider(name="sim", params={"latency_ms": 0, "record_path": str(record)})
    cancel = threading.Event()
    cancel.set()
    deltas, finish = collect(provider, GenerationRequest(prompt="never"), cancel)
    assert (deltas, finish.finish_reason) == ([], "cancelled")
    assert not record.exists()


def test_a_model_that_cannot_be_built_fails_as_a_provider_error(tmp_path: Path) -> None:
    provider = LlamaCppProvider(name="gone", params={"model_path": str(tmp_path / "no.gguf")})
    with pytest.raises(ProviderRejected) as raised:
        collect(provider, GenerationRequest(prompt="hello"))
    # The registry's fault, not the request's: no 400 for the client.
    assert not isinstance(raised.value, ProviderInvalidRequest)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_is_read_in_seconds(
    headers: dict[str, str] | None, seconds: float | None
) -> None:
    assert retry_after_seconds(headers) == seconds


def test_retry_after_as_an_http_date_is_the_time_left() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after_seconds({"retry-after": format_datetime(when, usegmt=True)})
    assert seconds is not None and 25 <= seconds <= 30


class _Counted(BaseChatModel):
    """Three chunks; the finish reason only in the last chunk's generation info, as some
    chat models report it. Notes when its stream is closed."""

    closed: list[bool] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "counted"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        raise NotImplementedError

    def _stream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        try:
            for word in ("one", " two", " three"):
                yield ChatGenerationChunk(message=AIMessageChunk(content=word))
            yield ChatGenerationChunk(
                message=AIMessageChunk(content=""), generation_info={"finish_reason": "length"}
            )
        finally:
            self.closed.append(True)


@dataclass
class _CountedProvider(ChatModelProvider):
    listener: BaseCallbackHandler | None = None

    def build_chat_model(self) -> BaseChatModel:
        return _Counted(callbacks=[self.listener] if self.listener else None)


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], **kwargs: Any) -> None:
        self.tokens.append(cast(str, token))  # a chat model streaming text: tokens are str


def test_a_model_with_callbacks_streams_through_langchain_so_they_see_every_token() -> None:
    listener = _Tokens()
    provider = _CountedProvider(name="counted", listener=listener)
    deltas, finish = collect(provider, GenerationRequest(prompt="count", stream=True))
    assert (deltas, finish.finish_reason) == (["one", " two", " three"], "length")
    assert listener.tokens[:3] == ["one", " two", " three"]


def test_a_stream_stopped_midway_closes_the_models_stream_at_once() -> None:
    provider = _CountedProvider(name="counted")
    model = provider.model
    assert isinstance(model, _Counted)
    # A generator (its close is what is tested), though typed as an Iterator.
    events = cast(
        Generator[StreamEvent, None, None],
        provider.stream(GenerationRequest(prompt="count", stream=True)),
    )
    assert next(events) == Delta("one")
    events.close()
    assert model.closed == [True]


class _Whole(BaseChatModel):
    """Answers whole calls with one message; the finish reason only in the generation
    info (as ChatOpenAI reports it), the usage on the message. Counts its calls."""

    calls: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "whole"

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls.append(str(messages[-1].content))
        message = AIMessage(
            content="one two three",
            usage_metadata={"input_tokens": 4, "output_tokens": 3, "total_tokens": 7},
        )
        info = {"finish_reason": "length"}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])


@dataclass
class _WholeProvider(ChatModelProvider):
    listener: BaseCallbackHandler | None = None
    cache: BaseCache | None = None

    def build_chat_model(self) -> BaseChatModel:
        return _Whole(callbacks=[self.listener] if self.listener else None, cache=self.cache)


class _Ends(BaseCallbackHandler):
    def __init__(self) -> None:
        self.ends = 0

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.ends += 1


@pytest.mark.parametrize(
    ("provider", "method", "stream", "texts"),
    [
        (_CountedProvider(name="counted"), "stream", True, ["one", " two", " three"]),
        (_WholeProvider(name="whole"), "invoke", False, ["one two three"]),
    ],
    ids=["stream", "whole"],
)
def test_a_call_nobody_listens_to_skips_langchains_run_bookkeeping(
    monkeypatch: pytest.MonkeyPatch,
    provider: ChatModelProvider,
    method: str,
    stream: bool,
    texts: list[str],
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"BaseChatModel.{method} was called")

    monkeypatch.setattr(BaseChatModel, method, refuse)
    deltas, finish = collect(provider, GenerationRequest(prompt="count", stream=stream))
    # The finish reason rode in generation info: it is read all the same.
    assert (deltas, finish.finish_reason) == (texts, "length")


def test_a_model_with_callbacks_is_called_through_langchain_so_they_see_the_call() -> None:
    listener = _Ends()
    provider = _WholeProvider(name="whole", listener=listener)
    deltas, finish = collect(provider, GenerationRequest(prompt="count", stream=False))
    assert (deltas, finish.finish_reason, finish.completion_tokens) == (
        ["one two three"],
        "length",
        3,
    )
    assert listener.ends == 1


def test_a_model_with_a_langchain_cache_is_called_through_langchain_so_the_cache_answers() -> None:
    provider = _WholeProvider(name="whole", cache=InMemoryCache())
    for _ in range(2):
        deltas, finish = collect(provider, GenerationRequest(prompt="count", stream=False))
        assert (deltas, finish.finish_reason) == (["one two three"], "length")
    model = provider.model
    assert isinstance(model, _Whole)
    assert model.calls == ["count"]  # the second answer came from the cache


@pytest.mark.parametrize(
    ("status", "invalid"), [(400, True), (413, True), (422, True), (401, False), (404, False)]
)
def test_an_http_refusal_is_the_requests_fault_only_for_400_413_422(
    status: int, invalid: bool
) -> None:
    error = status_error(status, "refused", {})
    assert isinstance(error, ProviderRejected) and not error.retryable
    assert isinstance(error, ProviderInvalidRequest) is invalid
