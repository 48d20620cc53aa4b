"""The simulated provider: a LangChain chat model with no model behind it.

It answers with words drawn from a fixed vocabulary, after a set latency and at a set
token rate, and fails at a set rate. Load and fault tests use it to exercise the queue,
the workers and retries with timings and failures they control. Its output is
deterministic given the messages and the seed, so tests can compare runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from inferq.errors import (
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from inferq.providers.base import ChatModelProvider
from inferq.providers.request import GenerationRequest

FailureKind = Literal["unavailable", "timeout", "rate_limited", "rejected", "invalid_request"]

_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure "
    "in reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint "
    "occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est"
)
VOCABULARY = tuple(_WORDS.split())

# Longest sleep between two chunks when no stop event is passed: a consumer checks for
# cancellation once per chunk. With one (as the worker passes), the sim waits on it.
STEP_SECONDS = 0.2

_record_lock = threading.Lock()


class SimulatedFailure(Exception):
    """A failure the simulated provider was configured to produce."""

    def __init__(self, kind: FailureKind, retry_after: float | None = None) -> None:
        super().__init__(f"simulated {kind} failure")
        self.kind = kind
        self.retry_after = retry_after


class SimulatedChatModel(BaseChatModel):
    """A chat model that streams deterministic filler text at a configured pace."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=100.0, ge=0)
    tokens_per_second: float = Field(default=200.0, gt=0)
    output_tokens: int = Field(default=32, ge=0)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    failure_kind: FailureKind = "unavailable"
    # A failure strikes after this many tokens were streamed: 0 fails before any
    # output, more simulates a stream cut mid-answer.
    fail_after_tokens: int = Field(default=0, ge=0)
    # Deterministic faults for tests: the first N calls of this process fail, and every
    # call fails while the named file exists (a test creates and removes it).
    fail_first_calls: int = Field(default=0, ge=0)
    fail_while_file: Path | None = None
    retry_after_seconds: float = Field(default=1.0, ge=0)
    seed: int = 0
    # The words answers are drawn from (space-separated); the built-in filler if unset.
    vocabulary: str | None = None
    record_path: Path | None = None

    # Failures are not seeded: a retry of the same request must be able to succeed.
    _failure_rng: random.Random = PrivateAttr(default_factory=random.Random)
    _calls: int = PrivateAttr(default=0)
    _calls_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @field_validator("record_path", "fail_while_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: Any) -> Any:
        # `${VAR}` of an unset variable interpolates to "": no record.
        return value or None

    @property
    def _llm_type(self) -> str:
        return "inferq-simulated"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "tokens_per_second": self.tokens_per_second,
            "output_tokens": self.output_tokens,
            "failure_rate": self.failure_rate,
            "failure_kind": self.failure_kind,
            "fail_after_tokens": self.fail_after_tokens,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stop_event: threading.Event | None = kwargs.pop("stop_event", None)
        prompt = render_prompt(messages)
        plan = self._plan(prompt, stop, kwargs)
        yield from _idle(self.latency_ms / 1000, stop_event)
        fails = self._fails()
        for i, token in enumerate(plan.tokens):
            if fails and i == self.fail_after_tokens:
                raise SimulatedFailure(self.failure_kind, self.retry_after_seconds)
            if i:
                yield from _idle(1 / self.tokens_per_second, stop_event)
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))
        if fails:
            raise SimulatedFailure(self.failure_kind, self.retry_after_seconds)
        self._record(prompt, plan.text)
        yield _final_chunk(plan, input_tokens=sum(len(m.text.split()) for m in messages))

    def _fails(self) -> bool:
        with self._calls_lock:
            self._calls += 1
            call = self._calls
        if call <= self.fail_first_calls:
            return True
        if self.fail_while_file is not None and self.fail_while_file.exists():
            return True
        return self._failure_rng.random() < self.failure_rate

    def _plan(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> _Plan:
        seed = kwargs.get("seed")
        max_tokens = kwargs.get("max_tokens")
        return plan_output(
            prompt,
            seed=self.seed if seed is None else int(seed),
            wanted=self.output_tokens,
            max_tokens=None if max_tokens is None else int(max_tokens),
            stop=stop or [],
            vocabulary=tuple(self.vocabulary.split(" ")) if self.vocabulary else VOCABULARY,
        )

    def _record(self, prompt: str, text: str) -> None:
        if self.record_path is None:
            return
        line = json.dumps(
            {
                "completed": True,
                "text_sha": hashlib.sha256(text.encode()).hexdigest(),
                "prompt": prompt[:64],
                # Which process completed the call: a test that kills workers can tell
                # a call repeated after its worker died from a double run.
                "pid": os.getpid(),
                "at": time.time(),
            }
        )
        # One write of one line to a file opened for append: lines from concurrent
        # workers do not interleave.
        with _record_lock, self.record_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


@dataclass(frozen=True)
class _Plan:
    tokens: list[str]
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def render_prompt(messages: list[BaseMessage]) -> str:
    """The text the output is derived from: every message's role and text."""
    return "\n".join(f"{m.type}: {m.text}" for m in messages)


def plan_output(
    prompt: str,
    *,
    seed: int,
    wanted: int,
    max_tokens: int | None,
    stop: list[str],
    vocabulary: tuple[str, ...] = VOCABULARY,
) -> _Plan:
    """The tokens to emit for this prompt and seed, cut by max_tokens and stop."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    count = wanted if max_tokens is None else min(wanted, max_tokens)
    tokens = [" " + rng.choice(vocabulary) for _ in range(count)]
    finish = "length" if count < wanted else "stop"
    text = "".join(tokens)
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    if cut < 0:
        return _Plan(tokens, finish)
    return _Plan(_tokens_before(tokens, cut), "stop")


def _tokens_before(tokens: list[str], cut: int) -> list[str]:
    """The tokens covering text[:cut]; the last may be a partial word."""
    kept: list[str] = []
    length = 0
    for token in tokens:
        if length + len(token) >= cut:
            if cut > length:
                kept.append(token[: cut - length])
            break
        kept.append(token)
        length += len(token)
    return kept


def _idle(seconds: float, stop_event: threading.Event | None) -> Iterator[ChatGenerationChunk]:
    """Wait `seconds`. With a stop event, wait on it and yield one empty chunk if it is
    set, so the consumer sees the stop at once; without, yield an empty chunk every step
    so a consumer can stop us meanwhile. (A thousand calls in flight each waking every
    step cost a worker a third of a core, all of it simulation.)"""
    if stop_event is not None:
        if seconds > 0 and stop_event.wait(seconds):
            yield ChatGenerationChunk(message=AIMessageChunk(content=""))
        return
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, STEP_SECONDS))
        if deadline - time.monotonic() > 0:
            yield ChatGenerationChunk(message=AIMessageChunk(content=""))


def _final_chunk(plan: _Plan, input_tokens: int) -> ChatGenerationChunk:
    output_tokens = len(plan.tokens)
    message = AIMessageChunk(
        content="",
        usage_metadata={
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
        response_metadata={"finish_reason": plan.finish_reason},
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message)


_ERRORS: dict[str, type[ProviderError]] = {
    "unavailable": ProviderUnavailable,
    "timeout": ProviderTimeout,
    "rejected": ProviderRejected,
    "invalid_request": ProviderInvalidRequest,
}


@dataclass
class SimProvider(ChatModelProvider):
    """The simulated provider; registry `params` are `SimulatedChatModel` fields."""

    # It simulates a streaming call at a pace, which cancel and deadline tests stop midway.
    whole_calls: ClassVar[bool] = False

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        # Building the simulated model is cheap and validates every field.
        SimulatedChatModel(**params)

    def build_chat_model(self) -> SimulatedChatModel:
        return SimulatedChatModel(**self.params)

    def stream_kwargs(
        self, request: GenerationRequest, cancel: threading.Event | None
    ) -> dict[str, Any]:
        return {**self.call_kwargs(request), "stop_event": cancel}

    def map_error(self, exc: Exception) -> ProviderError:
        if not isinstance(exc, SimulatedFailure):
            return super().map_error(exc)
        if exc.kind == "rate_limited":
            return ProviderRateLimited(str(exc), retry_after=exc.retry_after)
        return _ERRORS[exc.kind](str(exc))
