"""ASGI middleware that refuses bodies over the configured size, streamed or not."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferq.api.problems import OPENAI_ROUTES, openai_error
from inferq.errors import PayloadTooLarge


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_bytes: int, overrides: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Path prefix → its own limit (file uploads are far larger than a request body).
        self.overrides = dict(overrides or {})

    def _limit(self, path: str) -> int:
        for prefix, limit in self.overrides.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(scope, send, limit)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                # Raised inside the route's body read, so the problem handler answers.
                raise PayloadTooLarge(f"the body exceeds {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        error = PayloadTooLarge(f"the body exceeds {limit} bytes")
        path = scope.get("path", "")
        if path.startswith(OPENAI_ROUTES):
            body = orjson.dumps(openai_error(error)[1])
            media_type = b"application/json"
        else:
            body = orjson.dumps(error.problem(instance=path))
            media_type = b"application/problem+json"
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", media_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
