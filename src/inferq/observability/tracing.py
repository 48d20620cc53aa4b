"""OpenTelemetry tracing: off unless an OTLP endpoint is configured (or a test passes an
exporter). When on, the official instrumentations cover FastAPI, Celery (which carries
the context in the message headers), Redis, SQLAlchemy and httpx; inferq adds spans for
what they cannot see: the provider call, the result write and the webhook delivery.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

from inferq.config import Settings
from inferq.queue import RUN_JOB_TASK

tracer = trace.get_tracer("inferq")


def enabled(settings: Settings) -> bool:
    return bool(settings.otlp_endpoint)


def setup(settings: Settings, service: str, exporter: SpanExporter | None = None) -> bool:
    """Install the tracer provider and the library instrumentations; False when off.

    A given `exporter` (tests: the SDK's in-memory one) is flushed span by span.
    """
    if is_on():
        return True
    if exporter is None and not enabled(settings):
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_otlp(settings)))
    trace.set_tracer_provider(provider)
    _instrument_libraries()
    return True


def is_on() -> bool:
    """Has this process installed an SDK tracer provider (else spans are no-ops)?"""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def _otlp(settings: Settings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = (settings.otlp_endpoint or "").rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint)


def _instrumentors() -> list[Any]:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    return [CeleryInstrumentor(), RedisInstrumentor(), HTTPXClientInstrumentor()]  # type: ignore[no-untyped-call]


def _instrument_libraries() -> None:
    for instrumentor in _instrumentors():
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def instrument_app(app: Any) -> None:
    """Server spans for every route (the ASGI send/receive events are left out: noise)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="/metrics,/healthz", exclude_spans=["receive", "send"]
    )


def instrument_engine(engine: sa.Engine) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(engine=engine)


def declare_run_task() -> None:
    """Make the job task known to a publisher that never runs it (the API).

    The Celery instrumentation looks the task up in the default app to end its publish
    span; for a task it cannot find, the span would stay open and never be exported.
    """
    from celery import current_app

    if RUN_JOB_TASK not in current_app.tasks:

        @current_app.task(name=RUN_JOB_TASK, shared=False)  # type: ignore[untyped-decorator]
        def run_job(job_id: str) -> None:
            raise RuntimeError("jobs run on workers, not in the API")


class PendingParents:
    """The trace context of each job whose webhook is still to be delivered, so the
    delivery joins the job's trace. Kept in this process: a delivery made by another
    worker (after a restart) starts a trace of its own."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._contexts: dict[str, Context] = {}
        self._lock = threading.Lock()

    def remember(self, job_id: str) -> None:
        if not is_on():
            return
        with self._lock:
            if len(self._contexts) >= self.limit:
                self._contexts.pop(next(iter(self._contexts)))
            self._contexts[job_id] = otel_context.get_current()

    def get(self, job_id: str) -> Context | None:
        with self._lock:
            return self._contexts.get(job_id)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._contexts.pop(job_id, None)


def uninstrument_libraries() -> None:
    """Undo `_instrument_libraries` (tests that trace in the test process)."""
    for instrumentor in _instrumentors():
        instrumentor.uninstrument()
