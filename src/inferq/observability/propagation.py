"""The request id rides in the Celery message headers, next to the trace context."""

from __future__ import annotations

from typing import Any

from celery import signals
from opentelemetry import propagate

from inferq.observability.logs import current_request_id

HEADER = "inferq_request_id"


def _add_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = current_request_id()
    if request_id is not None and headers is not None:
        headers[HEADER] = request_id


def outgoing_headers() -> dict[str, Any]:
    """Headers for a message published without Celery (see queue.RedisPublisher): the
    request id and, when tracing is on, the current trace context."""
    headers: dict[str, Any] = {}
    _add_request_id(headers)
    propagate.inject(headers)
    return headers


def install() -> None:
    """Every message this process publishes carries the current request id."""
    signals.before_task_publish.connect(_add_request_id, weak=False, dispatch_uid=HEADER)


def request_id_of(request: Any) -> str | None:
    """The request id a task's message carried (Celery copies headers onto the request)."""
    value = getattr(request, HEADER, None)
    return str(value) if value else None
