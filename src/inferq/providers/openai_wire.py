"""ChatOpenAI with the chat-completions exchange made by httpx and orjson.

Why not the `openai` SDK for this one exchange: it builds a pydantic model of every
streamed chunk, decodes server-sent events in Python line by line, and langchain-openai
then dumps each model back to a dict. Measured in one process against the benchmark's
mock upstream (21 chunks, no latency): 3.7 ms of CPU per streamed call through the SDK
against 0.67 ms for the same exchange with httpx and orjson, and 1.1 against 0.36 ms for
a whole one. Through `OpenAIProvider.stream` (LangChain included), 4.6 ms per streamed
call became 1.7, and 1.45 per whole one 0.70. In a worker that CPU is paid on every
job's path, under one GIL.

What stays ChatOpenAI's: the request payload (`_get_request_payload`), LangChain's
messages and chunks (`_convert_chunk_to_generation_chunk`, `_create_chat_result`): the
extension points langchain-openai's own subclasses (DeepSeek, xAI) override. Any call
ChatOpenAI would route elsewhere (the Responses API, structured output, response
headers) goes through the SDK as before, on the SDK's own client. Failures are raised as
inferq's ProviderError family, by the same status rules as the SDK path's
(`status_error`).

This is plain httpx (the SDK runs on its fork, httpx2), so OpenTelemetry's httpx
instrumentation traces these calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import orjson
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import Field

from inferq.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from inferq.providers.base import status_error


class WireChatOpenAI(ChatOpenAI):
    """A ChatOpenAI whose plain chat completions go over `wire_client`."""

    # An httpx.Client (Any: pydantic would otherwise want a schema for it); without one,
    # every call goes through the SDK.
    wire_client: Any = Field(default=None, exclude=True)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        stream_usage: bool | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        kwargs["stream"] = True
        if self._should_stream_usage(stream_usage, **kwargs):
            kwargs["stream_options"] = {"include_usage": True}
        payload = self._get_request_payload(messages, stop=stop, **kwargs)
        if not self._plain(payload):
            kwargs.pop("stream_options", None)
            yield from super()._stream(
                messages, stop, run_manager, stream_usage=stream_usage, **kwargs
            )
            return
        chunk_class: type[BaseMessageChunk] = AIMessageChunk
        with self._exchange(payload, stream=True) as response:
            for chunk in _events(response):
                generation = self._convert_chunk_to_generation_chunk(chunk, chunk_class, {})
                if generation is None:
                    continue
                chunk_class = generation.message.__class__
                if run_manager:
                    logprobs = (generation.generation_info or {}).get("logprobs")
                    run_manager.on_llm_new_token(
                        generation.text, chunk=generation, logprobs=logprobs
                    )
                yield generation

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        payload = self._get_request_payload(messages, stop=stop, **kwargs)
        if not self._plain(payload):
            return super()._generate(messages, stop, run_manager, **kwargs)
        with self._exchange(payload, stream=False) as response:
            response.read()
        return self._create_chat_result(_json(response), {})

    def _plain(self, payload: dict[str, Any]) -> bool:
        """Whether ChatOpenAI would make this call as a plain chat completion."""
        return (
            isinstance(self.wire_client, httpx.Client)
            and "response_format" not in payload
            and not self.include_response_headers
            and not self._use_responses_api(payload)
            and not self._uses_gateway
        )

    def _exchange(
        self, payload: dict[str, Any], stream: bool
    ) -> AbstractContextManager[httpx.Response]:
        # The SDK's own request options travel in the payload; it merges them the same way.
        body = dict(payload)
        body.update(body.pop("extra_body", None) or {})
        extra_headers = body.pop("extra_headers", None) or {}
        query = {**(self.default_query or {}), **(body.pop("extra_query", None) or {})}
        headers = {
            "authorization": f"Bearer {self._api_key()}",
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
        if self.openai_organization:
            headers["openai-organization"] = self.openai_organization
        headers.update(self.default_headers or {})
        headers.update(extra_headers)
        base = (self.openai_api_base or "https://api.openai.com/v1").rstrip("/")
        client: httpx.Client = self.wire_client
        request = client.build_request(
            "POST",
            f"{base}/chat/completions",
            content=orjson.dumps(body),
            headers=headers,
            params=query,
        )
        return _exchange(client, request)

    def _api_key(self) -> str:
        key = self.openai_api_key
        if key is None:
            return ""
        if callable(key):
            value = key()
            if not isinstance(value, str):
                raise TypeError("an async API key callable cannot serve a sync call")
            return value
        return key.get_secret_value()


@contextmanager
def _exchange(client: httpx.Client, request: httpx.Request) -> Iterator[httpx.Response]:
    """Send `request`; the response, open until the block ends. Failures, while sending
    or while the block reads the body, are ProviderErrors."""
    try:
        response = client.send(request, stream=True)
        try:
            if response.is_error:
                response.read()
                raise _status_error(response)
            yield response
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(f"{type(exc).__name__}: {exc}") from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _status_error(response: httpx.Response) -> ProviderError:
    try:
        body: Any = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = response.text
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return status_error(response.status_code, str(message or body), response.headers)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"not a JSON object: {response.text[:200]!r}")
    return body


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON data of each server-sent event until `[DONE]`. An event carrying an
    `error` (a server failing mid-stream) raises, as the SDK does."""
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
            continue
        if line or not data:
            continue  # another field (event:, id:, a comment), or a blank line alone
        text = "\n".join(data)
        data.clear()
        if text.startswith("[DONE]"):
            return
        yield _chunk(text)
    if data and not data[0].startswith("[DONE]"):
        yield _chunk("\n".join(data))


def _chunk(text: str) -> dict[str, Any]:
    try:
        chunk = orjson.loads(text)
    except orjson.JSONDecodeError:
        chunk = None
    if not isinstance(chunk, dict):
        raise ProviderUnavailable(f"unreadable event: {text[:200]!r}")
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        raise ProviderUnavailable(f"the server failed mid-stream: {message}")
    return chunk
