"""The task body: claim the job → call the provider → stream deltas → save the result.

Why threads for the I/O pool: provider calls spend their time waiting on sockets, which
releases the GIL, so one process holds hundreds of calls in flight with a thread each.
Prefork would hold one call per process; gevent would need monkey-patching that
breaks C extensions (llama.cpp), psycopg and the SDKs' own threads; an asyncio pool is
not something Celery ships. The local pool uses the same threads pool with concurrency
equal to the number of generations a loaded model can run at once (one).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Protocol

import redis
import sqlalchemy as sa
import structlog
from celery import Celery

from inferq.admission import ending
from inferq.config import Settings
from inferq.conversations import turn_of
from inferq.db import direct
from inferq.db.engine import create_sync
from inferq.errors import InferqError, first_line
from inferq.jobs.claims import ClaimedJob, ClaimStore, Outcome
from inferq.jobs.outage import UntilReachable
from inferq.jobs.schemas import Job
from inferq.liveness import Liveness, StopSignal
from inferq.observability import jobs as obs
from inferq.observability import tracing
from inferq.observability.tracing import tracer
from inferq.providers.registry import ModelRegistry
from inferq.queue import enqueue, make_celery
from inferq.redis_clients import worker_client
from inferq.streams import StreamSink, StreamWriter

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What a worker process shares between its threads; built once at start."""

    settings: Settings
    pool: str
    engine: sa.Engine
    redis: redis.Redis
    registry: ModelRegistry
    celery: Celery
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )

    @cached_property
    def store(self) -> ClaimStore:
        # Read after `setup_worker`: traced, the claims stay on SQLAlchemy (and in spans).
        return ClaimStore(self.engine, direct=direct.usable(self.engine, tracing.is_on()))


class Handler(Protocol):
    """Runs one claimed job of a kind and says how it ended (never raises)."""

    def __call__(self, claimed: ClaimedJob, writer: StreamWriter, stop: StopSignal) -> Outcome: ...


FinishHook = Callable[[Job], None]


# How a job out of attempts that this worker handed back says why (not "the worker died").
HANDED_BACK = "Redis or the database failed under the job"


class InfrastructureError(Exception):
    """Redis or the database failed under a running job, which goes back to the queue."""


class JobRunner:
    """Claims a job, hands it to the handler for its kind, records how it ended."""

    def __init__(
        self,
        ctx: WorkerContext,
        liveness: Liveness,
        handlers: dict[str, Handler],
        finish_hooks: Sequence[FinishHook] = (),
    ) -> None:
        self.ctx = ctx
        self.liveness = liveness
        self.store = ctx.store
        self.handlers = handlers
        self.finish_hooks = finish_hooks
        # Set when the worker shuts down: store calls stop waiting for the database.
        self.stopping = threading.Event()
        self.until_reachable = UntilReachable(self.stopping)
        # Jobs a thread of this process is claiming or running: a second message for one
        # of them (published again by the orphan sweep) is dropped here, which is what
        # makes taking over a claim whose answer was lost (`_claim`) safe.
        self._mine: set[str] = set()
        self._mine_lock = threading.Lock()
        self.streams = StreamSink(ctx.redis, jobs_running=lambda: len(self._mine))

    def run(self, job_id: str) -> None:
        with self._mine_lock:
            if job_id in self._mine:
                log.info("job %s: already running here, message dropped", job_id)
                return
            self._mine.add(job_id)
        try:
            claimed = self._claim(job_id)
            if claimed is None:
                log.info("job %s: not queued any more, message dropped", job_id)
                return
            if claimed.request_id is not None:
                # The row's, not the message's: a message the reaper or the orphan sweep
                # published again carries none. The task's bound_contextvars undoes it.
                structlog.contextvars.bind_contextvars(request_id=claimed.request_id)
            with obs.timeline(claimed.model, claimed.created_at, claimed.claims == 1) as line:
                self._run(claimed, line)
        finally:
            with self._mine_lock:
                self._mine.discard(job_id)

    def _claim(self, job_id: str) -> ClaimedJob | None:
        worker = self.ctx.worker_id
        return self.until_reachable(
            lambda: self.store.claim(job_id, worker),
            lambda: self.store.held(job_id, worker),
            f"job {job_id}: claiming it",
        )

    def _save(self, claimed: ClaimedJob, outcome: Outcome) -> Job | None:
        worker, job_id = self.ctx.worker_id, claimed.id
        succeeded = outcome.status == "succeeded"
        turn = turn_of(claimed.payload, claimed.key_id, outcome.text) if succeeded else None
        try:
            return self.until_reachable(
                lambda: self.store.finish(job_id, worker, outcome, turn),
                lambda: self.store.ended_by(job_id, worker),
                f"job {job_id}: saving how it ended",
            )
        except sa.exc.StatementError as exc:
            # The database (or the driver) refused the row itself, PostgreSQL taking no
            # NUL in text: without this the job stayed running for good, its message
            # acknowledged. An unreachable database was waited for above.
            log.exception("job %s: the database refused its result; saved as failed", job_id)
            refused = replace(
                outcome,
                status="failed",
                text=None,
                result=None,
                error_type="internal_error",
                error_message=f"the database refused the job's result: {first_line(exc)}",
            )
            return self.until_reachable(
                lambda: self.store.finish(job_id, worker, refused),
                lambda: self.store.ended_by(job_id, worker),
                f"job {job_id}: saving it as failed",
            )

    def _run(self, claimed: ClaimedJob, line: obs.JobTimeline) -> None:
        job_id = claimed.id
        provider = self.provider_of(claimed.model)
        obs.job_started(
            job_id,
            claimed.claims,
            line,
            key_id=claimed.key_id,
            model=claimed.model,
            provider=provider,
            priority=claimed.priority,
        )
        writer = StreamWriter(
            self.ctx.redis,
            job_id,
            ttl_seconds=self.ctx.settings.result_ttl_seconds,
            maxlen=self.ctx.settings.max_tokens_limit + 64,
            coalesce_seconds=self.ctx.settings.stream_flush_ms / 1000,
            live=bool(claimed.payload.get("stream", True)),
            sink=self.streams,
        )
        if claimed.attempts > 1:
            writer.reset(claimed.attempts)
        stop = self.liveness.track(job_id, self._timeout(claimed.model))
        try:
            outcome = self._handle(claimed, writer, stop)
        except InfrastructureError as exc:
            log.warning("job %s: %s; handing it back to the queue", job_id, exc.__cause__)
            self.give_back(claimed, writer)
            return
        finally:
            self.liveness.untrack(job_id)
        with tracer.start_as_current_span("job.finish", attributes={"inferq.job_id": job_id}):
            job = self._save(claimed, self._priced(claimed, outcome))
        if job is None:
            log.warning("job %s: claim lost before it finished; result dropped", job_id)
            return
        writer.terminal(job, also=ending(job))
        settings = self.ctx.settings
        obs.job_finished(job, line, provider, settings.log_content, claimed.payload)
        self.finished(job)

    def _priced(self, claimed: ClaimedJob, outcome: Outcome) -> Outcome:
        """The outcome with its cost, at the price of the model that served it (none
        for an answer from the response cache)."""
        if outcome.cached:
            return replace(outcome, cost_usd=0.0)
        if outcome.prompt_tokens is None and outcome.completion_tokens is None:
            return outcome
        try:
            spec = self.ctx.registry.get(outcome.served_model or claimed.model)
        except InferqError:
            return outcome
        cost = spec.cost(outcome.prompt_tokens, outcome.completion_tokens)
        return replace(outcome, cost_usd=cost)

    def provider_of(self, model: str) -> str | None:
        try:
            return self.ctx.registry.get(model).provider
        except InferqError:
            return None

    def finished(self, job: Job) -> None:
        """Tell the finish hooks (batch progress, ...) that a job ended."""
        for hook in self.finish_hooks:
            try:
                hook(job)
            except Exception:
                log.exception("finish hook failed for job %s", job.id)

    def give_back(self, claimed: ClaimedJob, writer: StreamWriter) -> None:
        """running → queued and published again (or ended, out of attempts)."""
        worker, cap = self.ctx.worker_id, self.ctx.settings.max_attempts
        job = self.until_reachable(
            lambda: self.store.recover(claimed.id, worker, cap, HANDED_BACK),
            lambda: self.store.handed_back(claimed.id, worker),
            f"job {claimed.id}: handing it back",
        )
        if job is None:
            return
        if job.status != "queued":
            writer.terminal(job, also=ending(job))
            self.finished(job)
            return
        pool = self.ctx.registry.pool_of(job.model, self.ctx.pool)
        try:
            enqueue(self.ctx.celery, job.id, pool, job.priority)
        except Exception as exc:  # the orphan sweep publishes it once the broker is back
            log.warning("job %s: could not publish it again: %s", job.id, exc)

    def _timeout(self, model: str) -> float:
        try:
            own = self.ctx.registry.get(model).timeout_seconds
        except InferqError:
            own = None
        return own or float(self.ctx.settings.job_timeout_seconds)

    def _handle(self, claimed: ClaimedJob, writer: StreamWriter, stop: StopSignal) -> Outcome:
        handler = self.handlers.get(claimed.kind)
        if handler is None:
            return Outcome(
                "failed",
                error_type="unknown_kind",
                error_message=f"no handler for jobs of kind {claimed.kind!r}",
            )
        try:
            return handler(claimed, writer, stop)
        except (redis.RedisError, sa.exc.OperationalError) as exc:
            # Redis or the database dropped out under the job: not the job's fault.
            raise InfrastructureError(str(exc)) from exc
        except Exception as exc:
            log.exception("job %s: unexpected error", claimed.id)
            message = f"{type(exc).__name__}: {first_line(exc)}"
            return Outcome("failed", error_type="internal_error", error_message=message)


def build_context(settings: Settings, pool: str, concurrency: int) -> WorkerContext:
    connections = concurrency + 16
    return WorkerContext(
        settings=settings,
        pool=pool,
        engine=create_sync(
            settings.resolved_database_url,
            # A thread holds a connection for one statement at a time (claim, save): a
            # few dozen connections serve a thousand jobs in flight.
            pool_size=min(concurrency + 4, settings.database_pool_size),
        ),
        redis=worker_client(settings.resolved_redis_url, connections, timeout=5.0),
        registry=ModelRegistry.load(settings.models_file),
        celery=make_celery(settings, pool_connections=connections),
    )


__all__ = ["ClaimedJob", "Job", "JobRunner", "WorkerContext", "build_context"]
