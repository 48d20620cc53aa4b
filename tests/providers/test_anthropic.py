"""AnthropicProvider against replayed Messages API exchanges on a loopback server.

The API cannot be reached from the test machines; tests/providers/recordings holds
its answers in the documented wire format, and the replay server checks that each
request has the shape the API expects.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferq.errors import (
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderUnavailable,
)
from inferq.providers.anthropic import AnthropicProvider
from inferq.providers.base import Delta
from inferq.providers.registry import ModelRegistry
from inferq.providers.request import GenerationRequest
from tests.providers.replay import Check, Received, Recording, ReplayServer
from tests.providers.support import collect

MODEL = "claude-haiku-4-5"
KEY = "sk-ant-test"
CHAT = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


def expect_messages_request(max_tokens: int) -> Check:
    """The request shape of a streamed Messages API call for CHAT."""

    def check(request: Received) -> list[str]:
        body = request.body
        wanted: list[tuple[str, Any, Any]] = [
            ("path", request.path, "/v1/messages"),
            ("api key", _key(request.headers), KEY),
            ("has anthropic-version", "anthropic-version" in request.headers, True),
            ("model", body.get("model"), MODEL),
            ("max_tokens", body.get("max_tokens"), max_tokens),
            ("stream", body.get("stream"), True),
            ("system", _text(body.get("system")), CHAT[0]["content"]),
            ("messages", _messages(body.get("messages")), [("user", CHAT[1]["content"])]),
            ("seed sent", "seed" in body, False),
        ]
        return [f"{what}: {got!r} != {want!r}" for what, got, want in wanted if got != want]

    return check


def _key(headers: dict[str, str]) -> str | None:
    """The API key, in x-api-key or (newer SDKs) as a bearer token."""
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    return headers.get("x-api-key") or bearer or None


def _text(content: Any) -> str | None:
    """Text of a string or a list of text blocks, as the API accepts both."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return None


def _messages(messages: Any) -> list[tuple[str, str | None]] | None:
    if not isinstance(messages, list):
        return None
    return [(m.get("role"), _text(m.get("content"))) for m in messages]


def provider_for(server: ReplayServer) -> AnthropicProvider:
    return AnthropicProvider(
        name="claude", params={"model": MODEL, "api_key": KEY, "base_url": server.url}
    )


def test_anthropic_streams_text_usage_and_finish_stop() -> None:
    recording = Recording.load("anthropic_messages_stream.txt")
    events = list(recording.sse_events())
    expected_text = "".join(
        data["delta"]["text"] for name, data in events if name == "content_block_delta"
    )
    final_usage = next(data["usage"] for name, data in events if name == "message_delta")
    request = GenerationRequest(messages=CHAT, max_tokens=64, seed=5, temperature=0.2)
    with ReplayServer(recording, expect_messages_request(64)) as server:
        deltas, finish = collect(provider_for(server), request)
    assert server.problems == []
    assert len(server.received) == 1
    assert "".join(deltas) == expected_text
    assert len(deltas) == sum(1 for name, _ in events if name == "content_block_delta")
    assert finish.finish_reason == "stop"
    assert (finish.prompt_tokens, finish.completion_tokens) == (
        final_usage["input_tokens"],
        final_usage["output_tokens"],
    )


def test_anthropic_rate_limit_is_retryable_with_retry_after() -> None:
    recording = Recording.load("anthropic_messages_rate_limited.txt")
    server = ReplayServer(recording, expect_messages_request(32))
    with server, pytest.raises(ProviderRateLimited) as raised:
        collect(provider_for(server), GenerationRequest(messages=CHAT, max_tokens=32))
    assert server.problems == []
    assert raised.value.retryable
    assert raised.value.retry_after == float(recording.header("retry-after"))


def test_anthropic_invalid_request_is_invalid_not_retryable() -> None:
    recording = Recording.load("anthropic_messages_invalid_request.txt")
    message = json.loads(recording.body)["error"]["message"]
    server = ReplayServer(recording, expect_messages_request(32))
    with server, pytest.raises(ProviderInvalidRequest) as raised:
        collect(provider_for(server), GenerationRequest(messages=CHAT, max_tokens=32))
    assert server.problems == []
    assert not raised.value.retryable
    assert "invalid_request_error" in raised.value.detail
    assert message in raised.value.detail


def test_anthropic_overloaded_mid_stream_is_unavailable_after_partial_text() -> None:
    recording = Recording.load("anthropic_messages_stream_overloaded.txt")
    deltas: list[str] = []
    server = ReplayServer(recording, expect_messages_request(32))
    request = GenerationRequest(messages=CHAT, max_tokens=32)
    with server, pytest.raises(ProviderUnavailable) as raised:
        for event in provider_for(server).stream(request):
            if isinstance(event, Delta):
                deltas.append(event.text)
    assert server.problems == []
    assert raised.value.retryable
    assert deltas == [
        data["delta"]["text"]
        for name, data in recording.sse_events()
        if name == "content_block_delta"
    ]


def test_anthropic_without_an_api_key_fails_clearly_without_a_request() -> None:
    recording = Recording.load("anthropic_messages_stream.txt")
    with ReplayServer(recording, expect_messages_request(32)) as server:
        text = (
            "models:\n  claude:\n    provider: anthropic\n"
            f"    params: {{model: {MODEL}, base_url: '{server.url}'}}\n"
        )
        registry = ModelRegistry.parse(text, "inline", environ={})
        with pytest.raises(ProviderError) as raised:
            collect(registry.provider("claude"), GenerationRequest(messages=CHAT, max_tokens=32))
    assert server.received == []
    assert not raised.value.retryable
    assert "ANTHROPIC_API_KEY" in raised.value.detail


def test_anthropic_key_is_read_from_the_environment_variable_the_registry_names() -> None:
    recording = Recording.load("anthropic_messages_stream.txt")
    with ReplayServer(recording, expect_messages_request(32)) as server:
        text = (
            "models:\n  claude:\n    provider: anthropic\n"
            f"    params: {{model: {MODEL}, base_url: '{server.url}', api_key_env: TEAM_KEY}}\n"
        )
        registry = ModelRegistry.parse(text, "inline", environ={"TEAM_KEY": KEY})
        collect(registry.provider("claude"), GenerationRequest(messages=CHAT, max_tokens=32))
    assert server.problems == []
