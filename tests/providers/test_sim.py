"""The simulated provider: deterministic text, pacing, failures, cancellation, records."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from inferq.errors import (
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from inferq.providers.base import Delta
from inferq.providers.request import GenerationRequest
from inferq.providers.sim import VOCABULARY, SimProvider, SimulatedChatModel
from tests.providers.support import collect, user

FAST = {"latency_ms": 0, "tokens_per_second": 10_000}


def sim(**params: Any) -> SimProvider:
    return SimProvider(name="sim", params={**FAST, **params})


def text_of(provider: SimProvider, request: GenerationRequest) -> str:
    deltas, _ = collect(provider, request)
    return "".join(deltas)


def test_sim_output_is_deterministic_for_same_seed() -> None:
    provider = sim(output_tokens=20)
    request = GenerationRequest(messages=user("Tell me a story."), seed=7)
    assert text_of(provider, request) == text_of(sim(output_tokens=20), request)


def test_sim_output_changes_with_the_seed_or_the_prompt() -> None:
    provider = sim(output_tokens=20)
    base = text_of(provider, GenerationRequest(messages=user("Tell me a story."), seed=7))
    other_seed = text_of(provider, GenerationRequest(messages=user("Tell me a story."), seed=8))
    other_prompt = text_of(provider, GenerationRequest(messages=user("Tell me a joke."), seed=7))
    assert base != other_seed
    assert base != other_prompt


def test_sim_tokens_are_vocabulary_words_with_a_leading_space() -> None:
    deltas, _ = collect(sim(output_tokens=12), GenerationRequest(prompt="hello"))
    assert len(deltas) == 12
    assert all(d.startswith(" ") and d[1:] in VOCABULARY for d in deltas)


def test_sim_deltas_concatenate_to_the_generated_text() -> None:
    request = GenerationRequest(messages=user("Concatenate."), seed=3)
    streamed = text_of(sim(output_tokens=15), request)
    model = SimulatedChatModel(**FAST, output_tokens=15)
    invoked = model.invoke([("human", "Concatenate.")], seed=3)
    assert streamed == invoked.text
    assert invoked.response_metadata["finish_reason"] == "stop"


def test_sim_reports_usage_of_prompt_words_and_emitted_tokens() -> None:
    request = GenerationRequest(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Count   these four\nwords."},
        ]
    )
    deltas, finish = collect(sim(output_tokens=9), request)
    assert finish.prompt_tokens == len(["Be", "brief.", "Count", "these", "four", "words."])
    assert finish.completion_tokens == len(deltas) == 9


def test_sim_finish_is_length_when_max_tokens_cuts_the_output() -> None:
    deltas, finish = collect(sim(output_tokens=30), GenerationRequest(prompt="x", max_tokens=5))
    assert (len(deltas), finish.finish_reason, finish.completion_tokens) == (5, "length", 5)


def test_sim_finish_is_stop_when_the_output_fits() -> None:
    deltas, finish = collect(sim(output_tokens=5), GenerationRequest(prompt="x", max_tokens=5))
    assert (len(deltas), finish.finish_reason) == (5, "stop")


def test_sim_stop_sequence_ends_the_text_before_it() -> None:
    request = GenerationRequest(prompt="stop me", seed=1)
    full = text_of(sim(output_tokens=40), request)
    stop = full.split()[10]  # a word that occurs in the text
    cut = text_of(sim(output_tokens=40), GenerationRequest(prompt="stop me", seed=1, stop=[stop]))
    assert cut == full[: full.index(stop)]


def test_sim_latency_and_token_rate_are_roughly_respected() -> None:
    provider = SimProvider(
        name="sim", params={"latency_ms": 300, "tokens_per_second": 40, "output_tokens": 9}
    )
    started = time.monotonic()
    first: float | None = None
    for event in provider.stream(GenerationRequest(prompt="pace")):
        if first is None and isinstance(event, Delta):
            first = time.monotonic() - started
    total = time.monotonic() - started
    assert first is not None and 0.28 <= first < 0.8
    # 8 gaps between 9 tokens at 40/s: 0.2 s after the first token.
    assert 0.45 <= total < 1.5


@pytest.mark.parametrize(
    ("kind", "error", "retryable"),
    [
        ("unavailable", ProviderUnavailable, True),
        ("timeout", ProviderTimeout, True),
        ("rate_limited", ProviderRateLimited, True),
        ("rejected", ProviderRejected, False),
        ("invalid_request", ProviderInvalidRequest, False),
    ],
)
def test_sim_failure_kind_maps_to_its_provider_error(
    kind: str, error: type[ProviderError], retryable: bool
) -> None:
    provider = sim(failure_rate=1.0, failure_kind=kind, retry_after_seconds=2.5)
    with pytest.raises(error) as raised:
        collect(provider, GenerationRequest(prompt="fail"))
    assert type(raised.value) is error
    assert raised.value.retryable is retryable
    if isinstance(raised.value, ProviderRateLimited):
        assert raised.value.retry_after == 2.5


def test_sim_failure_rate_fails_about_that_share_of_calls() -> None:
    provider = sim(failure_rate=0.3, output_tokens=1)
    failures = 0
    for _ in range(400):
        try:
            collect(provider, GenerationRequest(prompt="maybe"))
        except ProviderUnavailable:
            failures += 1
    assert 80 <= failures <= 160


def test_sim_cancel_between_tokens_stops_early_with_finish_cancelled() -> None:
    provider = SimProvider(
        name="sim", params={"latency_ms": 0, "tokens_per_second": 50, "output_tokens": 200}
    )
    cancel = threading.Event()
    deltas: list[str] = []
    events = provider.stream(GenerationRequest(prompt="long", max_tokens=500), cancel)
    for event in events:
        if isinstance(event, Delta):
            deltas.append(event.text)
            if len(deltas) == 3:
                cancel.set()
        else:
            finish = event
    assert finish.finish_reason == "cancelled"
    assert len(deltas) == 3


def test_sim_cancel_during_latency_returns_promptly() -> None:
    provider = SimProvider(name="sim", params={"latency_ms": 10_000, "output_tokens": 5})
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    deltas, finish = collect(provider, GenerationRequest(prompt="slow"), cancel)
    assert finish.finish_reason == "cancelled"
    assert deltas == []
    assert time.monotonic() - started < 1.0


def test_sim_given_a_stop_event_waits_on_it_without_idle_chunks() -> None:
    model = SimulatedChatModel(latency_ms=400, tokens_per_second=1000, output_tokens=3)
    chunks = list(model.stream(user("quiet"), stop_event=threading.Event()))
    # Three tokens and the final usage chunk: nothing for the 400 ms of latency.
    assert [c.content for c in chunks][:3] == [c.content for c in chunks[:3] if c.content]
    assert len(chunks) == 4

    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    first = next(iter(model.stream(user("stopped"), stop_event=stop)))
    # The stop is seen when it happens, not at the next step of a stepped sleep.
    assert first.content == "" and time.monotonic() - started < 0.25


def test_sim_records_each_completed_generation_once(tmp_path: Path) -> None:
    record = tmp_path / "completions.jsonl"
    provider = sim(output_tokens=6, record_path=str(record))
    texts = [text_of(provider, GenerationRequest(prompt=f"job {i}")) for i in range(2)]

    cancel = threading.Event()
    cancel.set()
    collect(provider, GenerationRequest(prompt="cancelled job"), cancel)
    with pytest.raises(ProviderRejected):
        collect(
            sim(failure_rate=1.0, failure_kind="rejected", record_path=str(record)),
            GenerationRequest(prompt="failed job"),
        )

    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert all(line.pop("pid") == os.getpid() and line.pop("at") > 0 for line in lines)
    assert lines == [
        {
            "completed": True,
            "text_sha": hashlib.sha256(text.encode()).hexdigest(),
            "prompt": f"human: job {i}",
        }
        for i, text in enumerate(texts)
    ]


def test_sim_record_path_left_empty_records_nothing(tmp_path: Path) -> None:
    model = SimulatedChatModel(**FAST, record_path="")
    assert model.record_path is None
