"""OpenAIProvider against a real OpenAI-compatible server, and replayed OpenAI exchanges.

The server is llama-cpp-python's own (`python -m llama_cpp.server`) serving the shipped
Gemma 3 270M on loopback. That model is a base model whose GGUF chat template makes it
answer with nothing, so the server renders chats with `--chat_format vicuna`, a
plain-text "USER: ... ASSISTANT:" transcript a base model continues. (`chatml` was
tried: its tags are plain text to Gemma too, but short prompts still got empty replies.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferq.errors import (
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from inferq.providers.base import Delta
from inferq.providers.openai import OpenAIProvider
from inferq.providers.request import GenerationRequest
from tests.providers.replay import Check, Received, Recording, ReplayServer
from tests.providers.support import collect, free_port, user

SERVER_CTX = 1024
SERVER_KEY = "local-test-key"


@pytest.fixture(scope="module")
def server_url(gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf_path), "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(SERVER_CTX), "--n_threads", "2", "--chat_format", "vicuna",
        "--api_key", SERVER_KEY,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            auth = {"authorization": f"Bearer {SERVER_KEY}"}
            if httpx.get(f"{url}/models", headers=auth, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("llama_cpp.server did not start:\n" + log_path.read_text()[-3000:])


def local(url: str, **params: object) -> OpenAIProvider:
    return OpenAIProvider(
        name="local",
        params={"model": "gemma-3-270m", "base_url": url, "api_key": SERVER_KEY, **params},
    )


def test_openai_streams_non_empty_text_from_a_compatible_server(server_url: str) -> None:
    request = GenerationRequest(messages=user("What is the capital of France?"), max_tokens=24)
    deltas, finish = collect(local(server_url), request)
    assert "".join(deltas).strip()
    assert len(deltas) > 1  # streamed, not one block
    assert finish.finish_reason in {"stop", "length"}


def test_openai_whole_answer_is_one_call_told_as_one_delta(server_url: str) -> None:
    # Nobody streams it (a non-stream completion): one non-streaming call, whose usage
    # the server does report (it streams none, see below).
    request = GenerationRequest(
        messages=user("What is the capital of France?"), max_tokens=12, stream=False
    )
    deltas, finish = collect(local(server_url), request)
    assert len(deltas) == 1 and deltas[0].strip()
    assert finish.finish_reason in {"stop", "length"}
    assert finish.prompt_tokens > 0 and 0 < finish.completion_tokens <= 12


def test_openai_max_tokens_caps_the_server_with_finish_length(server_url: str) -> None:
    request = GenerationRequest(
        messages=user("Write a long story about the sea."), max_tokens=5, temperature=0, seed=1
    )
    deltas, finish = collect(local(server_url), request)
    assert finish.finish_reason == "length"
    assert 1 <= len(deltas) <= 5


def test_openai_usage_is_zero_when_the_server_streams_none(server_url: str) -> None:
    # llama-cpp-python's server ignores stream_options.include_usage: its streams carry
    # no usage, and none is made up. (Usage that is streamed: the replayed test below.)
    _, finish = collect(local(server_url), GenerationRequest(messages=user("Hi"), max_tokens=4))
    assert (finish.prompt_tokens, finish.completion_tokens) == (0, 0)


def test_openai_client_error_is_rejected_not_retryable(server_url: str) -> None:
    # A wrong key is a 4xx this server answers before streaming. (An over-long prompt is
    # not: when streaming, it answers 200 and ends the stream without a chunk.)
    provider = local(server_url, api_key="wrong-key")
    with pytest.raises(ProviderRejected) as raised:
        collect(provider, GenerationRequest(messages=user("Hi"), max_tokens=4))
    assert not raised.value.retryable
    assert "401" in raised.value.detail
    # Our credentials, not the client's request: not a 400 for the client.
    assert not isinstance(raised.value, ProviderInvalidRequest)


def test_openai_slow_answer_is_a_timeout(server_url: str) -> None:
    # Evaluating ~900 prompt tokens takes far longer than 50 ms.
    request = GenerationRequest(messages=user("word " * 900), max_tokens=1)
    with pytest.raises(ProviderTimeout):
        collect(local(server_url, timeout_seconds=0.05), request)


def test_openai_closed_port_is_unavailable() -> None:
    provider = local(f"http://127.0.0.1:{free_port()}/v1", timeout_seconds=5)
    with pytest.raises(ProviderUnavailable) as raised:
        collect(provider, GenerationRequest(messages=user("anyone?")))
    assert raised.value.retryable


# Replayed exchanges: what llama-cpp-python's server does not send (streamed usage, 429).


def expect_chat_request(max_tokens_field: str, max_tokens: int, messages: object) -> Check:
    other = {"max_tokens", "max_completion_tokens"} - {max_tokens_field}

    def check(request: Received) -> list[str]:
        body = request.body
        problems = [
            f"{what}: {got!r} != {want!r}"
            for what, got, want in [
                ("path", request.path, "/v1/chat/completions"),
                ("model", body.get("model"), "gpt-4o-mini"),
                ("stream", body.get("stream"), True),
                ("stream_options", body.get("stream_options"), {"include_usage": True}),
                (max_tokens_field, body.get(max_tokens_field), max_tokens),
                ("messages", body.get("messages"), messages),
                ("authorization", request.headers.get("authorization"), "Bearer sk-test"),
            ]
            if got != want
        ]
        problems += [f"unexpected {field}" for field in other if field in body]
        return problems

    return check


def replayed(url: str, **params: object) -> OpenAIProvider:
    return OpenAIProvider(
        name="gpt",
        params={"model": "gpt-4o-mini", "base_url": f"{url}/v1", "api_key": "sk-test", **params},
    )


def test_openai_streamed_usage_and_text_come_through() -> None:
    recording = Recording.load("openai_chat_stream_with_usage.txt")
    events = [data for _, data in recording.sse_events()]
    expected_text = "".join(
        choice["delta"].get("content") or "" for e in events for choice in e["choices"]
    )
    usage = events[-1]["usage"]
    check = expect_chat_request("max_tokens", 50, user("Capital of France?"))
    with ReplayServer(recording, check) as server:
        deltas, finish = collect(
            replayed(server.url),
            GenerationRequest(messages=user("Capital of France?"), max_tokens=50),
        )
    assert server.problems == []
    assert "".join(deltas) == expected_text
    assert finish.finish_reason == "stop"
    assert (finish.prompt_tokens, finish.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


def test_openai_can_send_max_completion_tokens_instead() -> None:
    recording = Recording.load("openai_chat_stream_with_usage.txt")
    check = expect_chat_request("max_completion_tokens", 9, user("Hi"))
    with ReplayServer(recording, check) as server:
        provider = replayed(server.url, max_tokens_param="max_completion_tokens")
        collect(provider, GenerationRequest(messages=user("Hi"), max_tokens=9))
    assert server.problems == []


def test_openai_rate_limit_carries_retry_after() -> None:
    recording = Recording.load("openai_chat_rate_limited.txt")
    server = ReplayServer(recording, lambda _: [])
    with server, pytest.raises(ProviderRateLimited) as raised:
        collect(replayed(server.url), GenerationRequest(messages=user("Hi")))
    # retry-after-ms is the finer of the two headers the recording carries.
    assert raised.value.retry_after == float(recording.header("retry-after-ms")) / 1000
    assert raised.value.retryable


def test_openai_server_error_is_unavailable() -> None:
    recording = Recording.load("openai_chat_unavailable.txt")
    with ReplayServer(recording, lambda _: []) as server, pytest.raises(ProviderUnavailable):
        collect(replayed(server.url), GenerationRequest(messages=user("Hi")))


# The exchange is made by httpx and orjson (inferq.providers.openai_wire), not the SDK.


def test_openai_error_event_mid_stream_is_unavailable_after_the_text_before_it() -> None:
    recording = Recording.load("openai_chat_stream_error_midway.txt")
    deltas: list[str] = []
    with ReplayServer(recording, lambda _: []) as server:
        provider = replayed(server.url)
        with pytest.raises(ProviderUnavailable) as raised:
            for event in provider.stream(GenerationRequest(messages=user("Hi"))):
                if isinstance(event, Delta):
                    deltas.append(event.text)
    # Both chunks before the error arrived, the `data:` without a space included.
    assert deltas == ["Paris", " is"]
    assert "The engine died mid-generation." in raised.value.detail
    assert raised.value.retryable


def test_openai_whole_call_sends_no_stream_and_reads_text_and_usage() -> None:
    recording = Recording.load("openai_chat_completion.txt")

    def check(request: Received) -> list[str]:
        body = request.body
        return [
            problem
            for problem, bad in [
                (f"stream: {body.get('stream')!r}", body.get("stream") not in (None, False)),
                (f"max_tokens: {body.get('max_tokens')!r}", body.get("max_tokens") != 7),
                (f"messages: {body.get('messages')!r}", body.get("messages") != user("Hi")),
                ("no bearer key", request.headers.get("authorization") != "Bearer sk-test"),
            ]
            if bad
        ]

    with ReplayServer(recording, check) as server:
        deltas, finish = collect(
            replayed(server.url), GenerationRequest(messages=user("Hi"), max_tokens=7, stream=False)
        )
    assert server.problems == []
    assert deltas == ["Paris is the capital."]
    assert (finish.finish_reason, finish.prompt_tokens, finish.completion_tokens) == ("stop", 14, 5)


def test_openai_calls_chatopenai_would_make_otherwise_still_go_through_the_sdk() -> None:
    # Structured output is one of the calls ChatOpenAI makes its own way: the SDK, whose
    # requests say so in their x-stainless-* headers; a plain call carries none.
    recording = Recording.load("openai_chat_completion.txt")
    with ReplayServer(recording, lambda _: []) as server:
        model = replayed(server.url).model
        plain = model.invoke("Hi")
        structured = model.invoke("Hi", response_format={"type": "json_object"})
    first, second = server.received
    assert not any(name.startswith("x-stainless") for name in first.headers)
    assert "x-stainless-lang" in second.headers
    assert second.body["response_format"] == {"type": "json_object"}
    assert plain.content == structured.content == "Paris is the capital."
