"""What a worker observes of one job: timings, provider calls, the end; as metrics,
log lines and spans.

The worker opens a `JobTimeline` when it claims a job; the provider wrapper finds it in
a context variable (each job runs in its own worker thread) to time tokens and to tell a
retry (the same model called again) from a fallback (another model).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from inferq.errors import ProviderError
from inferq.observability import metrics
from inferq.observability.tracing import tracer

if TYPE_CHECKING:
    from inferq.jobs.schemas import Job
    from inferq.providers.base import StreamEvent

log = structlog.get_logger("inferq.jobs")


@dataclass
class JobTimeline:
    """One claim of one job on this worker."""

    model: str
    created_at: datetime | None
    claimed_at: float = field(default_factory=time.time)
    first_token_at: float | None = None
    last_model: str | None = None

    @property
    def queue_wait(self) -> float | None:
        if self.created_at is None:
            return None
        return max(self.claimed_at - self.created_at.timestamp(), 0.0)

    @property
    def ttft(self) -> float | None:
        if self.first_token_at is None or self.created_at is None:
            return None
        return max(self.first_token_at - self.created_at.timestamp(), 0.0)

    def call(self, model: str) -> None:
        """A provider call begins: count it as a retry or a fallback if it is one."""
        previous = self.last_model or self.model
        if self.last_model == model:
            metrics.RETRIES.labels(model).inc()
        elif previous != model:
            metrics.FALLBACKS.labels(previous, model).inc()
        self.last_model = model

    def token(self, model: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.time()
            if self.ttft is not None:
                metrics.TTFT.labels(model).observe(self.ttft)


_current: ContextVar[JobTimeline | None] = ContextVar("inferq_job_timeline", default=None)


@contextmanager
def timeline(model: str, created_at: datetime | None, first_claim: bool) -> Iterator[JobTimeline]:
    """Open the job's timeline for this thread; the queue wait counts on the first claim."""
    line = JobTimeline(model, created_at)
    if first_claim and line.queue_wait is not None:
        metrics.QUEUE_WAIT.labels(model).observe(line.queue_wait)
    token = _current.set(line)
    try:
        yield line
    finally:
        _current.reset(token)


def observe_call(model: str, provider: str, events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
    """The provider's events, in a span, with token timings and error kinds counted."""
    from inferq.providers.base import Delta

    line = _current.get()
    if line is not None:
        line.call(model)
    span = tracer.start_span(
        "provider.stream", attributes={"inferq.model": model, "inferq.provider": provider}
    )
    ctx = trace.set_span_in_context(span)
    last: float | None = None
    try:
        while True:
            # The span is current only while the provider runs, never across a yield.
            attached = otel_context.attach(ctx)
            try:
                event = next(events)
            except StopIteration:
                return
            finally:
                otel_context.detach(attached)
            if isinstance(event, Delta):
                now = time.perf_counter()
                if last is not None:
                    metrics.INTER_TOKEN.labels(model).observe(now - last)
                last = now
                if line is not None:
                    line.token(model)
            yield event
    except ProviderError as exc:
        metrics.PROVIDER_ERRORS.labels(model, exc.kind).inc()
        span.set_status(Status(StatusCode.ERROR, exc.kind))
        span.record_exception(exc)
        raise
    finally:
        # Closed with us, so the provider's stream releases its connection at once.
        close = getattr(events, "close", None)
        if close is not None:
            close()
        span.end()


def job_started(job_id: str, claims: int, line: JobTimeline, **fields: Any) -> None:
    log.info("job.running", job_id=job_id, attempt=claims, queue_wait_s=line.queue_wait, **fields)


def job_finished(
    job: Job,
    line: JobTimeline | None,
    provider: str | None,
    content: bool = False,
    prompt: Any = None,
) -> None:
    """The job's terminal metrics and its one log line."""
    served = job.served_model or job.model
    metrics.JOBS_FINISHED.labels(job.model, job.status).inc()
    duration = _seconds(job.started_at, job.finished_at)
    if duration is not None:
        metrics.JOB_DURATION.labels(job.model).observe(duration)
    if job.usage is not None and not job.cached:  # a cached answer used no model
        metrics.TOKENS.labels(served, "input").inc(job.usage.prompt_tokens)
        metrics.TOKENS.labels(served, "output").inc(job.usage.completion_tokens)
    if job.cost_usd is not None:  # a free model shows its cost, 0, too
        metrics.COST.labels(served).inc(job.cost_usd)
    fields: dict[str, Any] = {
        "job_id": job.id,
        "key_id": job.key_id,
        "model": job.model,
        "served_model": job.served_model,
        "provider": provider,
        "priority": job.priority,
        "outcome": job.status,
        "attempt": job.attempts,
        "queue_wait_s": _seconds(job.created_at, job.started_at),
        "ttft_s": line.ttft if line is not None else None,
        "duration_s": duration,
        "prompt_tokens": job.usage.prompt_tokens if job.usage else None,
        "completion_tokens": job.usage.completion_tokens if job.usage else None,
        "cost_usd": job.cost_usd,
        "cached": job.cached,
        "error_type": job.error.type if job.error else None,
    }
    if content:
        fields["prompt"] = prompt
        fields["output"] = job.output.text if job.output else None
    log.info("job.finished", **fields)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 6)
