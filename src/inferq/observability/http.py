"""One ASGI middleware for every HTTP request: its request id and its metrics.

Plain ASGI rather than `BaseHTTPMiddleware`: it stays out of the response body's way
(streams pass through untouched) and costs two clock reads and a counter per request.
"""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferq.observability.logs import REQUEST_ID_HEADER, request_id_from
from inferq.observability.metrics import HTTP_DURATION, HTTP_REQUESTS

_HEADER = REQUEST_ID_HEADER.lower().encode()


class RequestObservability:
    def __init__(self, app: ASGIApp, metrics: bool = True) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == _HEADER), None)
        request_id = request_id_from(incoming.decode("latin-1") if incoming else None)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            if self.metrics:
                _observe(scope, status, time.perf_counter() - started)


def _observe(scope: Scope, status: int, seconds: float) -> None:
    # The route template, never the raw path: job ids must not become labels.
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    method = scope["method"]
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)
