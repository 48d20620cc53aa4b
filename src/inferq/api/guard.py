"""`RequestGuard`: ASGI middleware that refuses what no route can take, before any runs:
bodies over the configured size (streamed or not), and URLs holding NUL.

PostgreSQL keeps no NUL in text, so an id, cursor or name holding one failed its query
there (a 500) where SQLite answered 404: refused here, on either store alike. Bodies are
checked field by field (`inferq.jobs.schemas.Text`).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferq.api.problems import OPENAI_ROUTES, openai_error
from inferq.errors import InferqError, InvalidRequest, PayloadTooLarge


class RequestGuard:
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
        where = _nul_in_url(scope)
        if where:
            await _refuse(scope, send, InvalidRequest(f"the URL's {where} holds NUL (\\u0000)"))
            return
        limit = self._limit(scope.get("path", ""))
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _refuse(scope, send, PayloadTooLarge(f"the body exceeds {limit} bytes"))
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


def _nul_in_url(scope: Scope) -> str | None:
    """Which part of the URL holds NUL (the path arrives decoded, the query not)."""
    if "\x00" in scope.get("path", ""):
        return "path"
    if b"%00" in scope.get("query_string", b""):
        return "query"
    return None


async def _refuse(scope: Scope, send: Send, error: InferqError) -> None:
    """Answer `error` as the problem handler would, before any route runs."""
    path = scope.get("path", "")
    if path.startswith(OPENAI_ROUTES):
        status, document = openai_error(error)
        body = orjson.dumps(document)
        media_type = b"application/json"
    else:
        status, body = error.status, orjson.dumps(error.problem(instance=path))
        media_type = b"application/problem+json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
