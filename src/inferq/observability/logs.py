"""Logging: structlog for every line, JSON (or console) rendering, request ids.

inferq's modules keep using stdlib `logging`; structlog's `ProcessorFormatter` renders
those lines and structlog's own alike, with the context variables (request id, job id)
bound by the HTTP middleware and the worker's task merged into each.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import orjson
import structlog

from inferq.config import Settings

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept when it is short and plain; anything else gets a fresh one.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_from(value: str | None) -> str:
    """The client's request id if usable, else a new one."""
    if value and _SAFE_ID.match(value):
        return value
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value is not None else None


def _json(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


CHATTY_LOGGERS = ("httpx", "httpx2", "httpcore", "celery.app.trace", "celery.worker.strategy")


def configure_logging(settings: Settings, console: bool | None = None) -> None:
    """Route stdlib and structlog lines through one renderer on stderr."""
    if console is None:
        console = settings.log_format == "console"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer(serializer=_json)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level.upper())
    # A line per HTTP call and two per Celery task repeat what the job's own lines say,
    # and were three of a worker's five log lines per job (a tenth of its CPU at load).
    # They come back at DEBUG.
    quiet = max(logging.getLevelName(settings.log_level.upper()), logging.WARNING)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    logging.captureWarnings(True)


__all__ = ["REQUEST_ID_HEADER", "configure_logging", "current_request_id", "request_id_from"]
