"""A mock OpenAI-compatible upstream with a fixed latency and a fixed streaming chunk rate.

A bare asyncio HTTP/1.1 server (keep-alive, Content-Length request bodies, chunked
responses) rather than a framework, so that it costs little CPU and is never the
bottleneck; the benchmark reports its CPU use beside every figure.

* non-stream: the whole answer after `latency_ms`;
* stream: the first chunk after `first_chunk_ms`, then `chunks` more `chunk_interval_ms`
  apart (100 + 20 x 20 = 500 ms by default: the same total as non-stream).

    python -m bench.upstream --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass

import orjson

WORD = "lorem "


@dataclass(frozen=True)
class Timing:
    """How the mock paces its answers."""

    latency_ms: float = 500.0
    first_chunk_ms: float = 100.0
    chunks: int = 20
    chunk_interval_ms: float = 20.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request off a keep-alive connection; None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Request(method, path, headers, body)


def _head(status: str, content_type: str, extra: str) -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{extra}\r\n").encode()


def _json_response(payload: object, status: str = "200 OK") -> bytes:
    body = orjson.dumps(payload)
    return _head(status, "application/json", f"content-length: {len(body)}\r\n") + body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(payload: object) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return _chunk(b"data: " + data + b"\n\n")


def _completion(model: str, chat: bool, tokens: int, prompt_tokens: int) -> dict[str, object]:
    text = WORD * tokens
    choice: dict[str, object] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "cmpl-mock",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage(tokens, prompt_tokens),
    }


def _usage(tokens: int, prompt_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens,
        "total_tokens": prompt_tokens + tokens,
    }


def _stream_chunk(model: str, chat: bool, text: str, finish: str | None) -> dict[str, object]:
    choice: dict[str, object] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["delta"] = {"role": "assistant", "content": text} if text else {}
    else:
        choice["text"] = text
    return {
        "id": "cmpl-mock",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


class Upstream:
    """Serves the mock API on one port until cancelled."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                await self.answer(request, writer)
                if request.headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def answer(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if request.method == "GET":
            payload = {"object": "list", "data": [{"id": "mock", "object": "model"}]}
            writer.write(_json_response(payload))
            return
        if not request.path.endswith("/completions"):
            writer.write(_json_response({"error": {"message": "not found"}}, "404 Not Found"))
            return
        body = orjson.loads(request.body or b"{}")
        chat = request.path.endswith("/chat/completions")
        model = str(body.get("model", "mock"))
        prompt_tokens = max(1, len(request.body) // 4)
        if body.get("stream"):
            await self.stream(writer, model, chat, prompt_tokens, _wants_usage(body))
        else:
            await asyncio.sleep(self.timing.latency_ms / 1000)
            tokens = self.timing.chunks + 1
            writer.write(_json_response(_completion(model, chat, tokens, prompt_tokens)))

    async def stream(
        self,
        writer: asyncio.StreamWriter,
        model: str,
        chat: bool,
        prompt_tokens: int,
        usage: bool,
    ) -> None:
        t = self.timing
        extra = "transfer-encoding: chunked\r\ncache-control: no-cache\r\n"
        start = time.monotonic()
        await asyncio.sleep(t.first_chunk_ms / 1000)
        writer.write(_head("200 OK", "text/event-stream", extra))
        for i in range(t.chunks + 1):
            due = start + (t.first_chunk_ms + i * t.chunk_interval_ms) / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(_sse(_stream_chunk(model, chat, WORD, None)))
        final = _stream_chunk(model, chat, "", "stop")
        if usage:
            final["usage"] = _usage(t.chunks + 1, prompt_tokens)
        writer.write(_sse(final) + _sse(b"[DONE]") + b"0\r\n\r\n")
        await writer.drain()


def _wants_usage(body: dict[str, object]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


async def serve(host: str, port: int, timing: Timing) -> None:
    upstream = Upstream(timing)
    server = await asyncio.start_server(upstream.handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=Timing.latency_ms)
    parser.add_argument("--first-chunk-ms", type=float, default=Timing.first_chunk_ms)
    parser.add_argument("--chunks", type=int, default=Timing.chunks)
    parser.add_argument("--chunk-interval-ms", type=float, default=Timing.chunk_interval_ms)
    args = parser.parse_args()
    timing = Timing(args.latency_ms, args.first_chunk_ms, args.chunks, args.chunk_interval_ms)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, timing))


if __name__ == "__main__":
    main()
