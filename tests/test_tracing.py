"""One job, one trace: the API's span and the worker's, parent-linked across the queue.

The API and a worker run in this process (the worker on Celery's test worker thread), so
the SDK's in-memory exporter sees both; the context still crosses only in the message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from inferq.app import create_app
from inferq.config import Settings, get_settings
from inferq.db.migrate import upgrade
from inferq.generation import GenerateHandler
from inferq.handlers import build_breaker
from inferq.liveness import Liveness
from inferq.observability import tracing
from inferq.queue import pool_queues
from inferq.webhooks import runtime as webhook_runtime
from inferq.worker import FinishHook, JobRunner, build_context
from inferq.worker_process import register_task
from tests.conftest import TESTS, wait_for
from tests.webhooks.receiver import Receiver


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    assert tracing.setup(get_settings(), "inferq-test", exporter=spans)
    yield spans
    tracing.uninstrument_libraries()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    return get_settings(
        data_dir=tmp_path,
        redis_url=redis_url,
        database_url=url,
        models_file=TESTS / "observability_models.yaml",
        bootstrap_key="iq_trace_test_key",
        webhook_allow_hosts="127.0.0.1",
        webhook_sweep_interval_seconds=0.1,
    )


def run_one_job(settings: Settings, webhook_url: str) -> str:
    """Submit through the API and let an in-process worker run it; the job's id."""
    ctx = build_context(settings, "io", 2)
    liveness = Liveness(ctx.redis, ctx.worker_id, 10, 1)
    generate = GenerateHandler(ctx.registry, build_breaker(ctx), settings, ctx.store.add_attempt)
    hooks: list[FinishHook] = []
    sender = webhook_runtime.install(ctx, hooks)
    register_task(ctx, JobRunner(ctx, liveness, {"generate": generate}, hooks))
    sender.start()
    headers = {"Authorization": "Bearer iq_trace_test_key"}
    try:
        with (
            start_worker(
                ctx.celery,
                pool="threads",
                concurrency=2,
                perform_ping_check=False,
                queues=pool_queues("io"),
            ),
            TestClient(create_app(settings)) as client,
        ):
            body = {"model": "sim-priced", "prompt": "hi", "webhook": {"url": webhook_url}}
            job_id: str = client.post("/v1/jobs", json=body, headers=headers).json()["id"]
            wait_for(
                lambda: (
                    client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"]
                    == "succeeded"
                ),
                timeout=30,
            )
            return job_id
    finally:
        sender.stop()
        ctx.engine.dispose()


def test_api_and_worker_spans_share_one_trace_linked_through_the_message(
    exporter: InMemorySpanExporter, settings: Settings
) -> None:
    with Receiver() as receiver:
        run_one_job(settings, receiver.url("/trace"))
        wait_for(lambda: named(exporter.get_finished_spans(), "webhook.deliver"), timeout=20)
    spans = exporter.get_finished_spans()
    api = next(s for s in spans if s.kind == SpanKind.SERVER and s.name == "POST /v1/jobs")
    publish = named(spans, "apply_async/inferq.run_job")[0]
    run = named(spans, "run/inferq.run_job")[0]
    trace_id = api.context.trace_id
    assert publish.context.trace_id == run.context.trace_id == trace_id
    # The worker's span is the child of the publish span, whose chain reaches the request.
    assert run.parent is not None and run.parent.span_id == publish.context.span_id
    assert api.context.span_id in ancestors(publish, spans)
    # Provider call, result write and webhook delivery: in the job's trace, under `run`.
    for name in ("provider.stream", "job.finish", "webhook.deliver"):
        span = named(spans, name)[0]
        assert span.context.trace_id == trace_id, name
        assert run.context.span_id in ancestors(span, spans), name


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def ancestors(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> set[int]:
    by_id = {s.context.span_id: s for s in spans}
    found: set[int] = set()
    parent = span.parent
    while parent is not None:
        found.add(parent.span_id)
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return found
