"""Moving a batch on, in a worker: fan-out, expiry, cancellation and the final step.

`advance` reads what to do from the batch row, so it is safe to call at any time and
any number of times: from its Celery task, from the finish hook of the batch's last job,
and (through the task) from the sweep that picks up what a crash left behind.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
import sqlalchemy as sa
from celery import Celery

from inferq import redis_keys
from inferq.batches import queries
from inferq.batches.fanout import FanOut
from inferq.batches.finalize import Finalizer
from inferq.batches.lines import LineParser
from inferq.config import Settings
from inferq.db.tables import jobs
from inferq.jobs.schemas import Job
from inferq.jobs.store import utcnow
from inferq.liveness import request_stops
from inferq.orphans import queue_length
from inferq.providers.registry import ModelRegistry
from inferq.queue import POOLS, enqueue, queue_name
from inferq.streams import terminal_entry

log = logging.getLogger(__name__)


class BatchRunner:
    def __init__(
        self,
        engine: sa.Engine,
        client: redis.Redis,
        celery: Celery,
        registry: ModelRegistry,
        settings: Settings,
        worker_id: str,
    ) -> None:
        self.engine = engine
        self.redis = client
        self.celery = celery
        self.registry = registry
        self.settings = settings
        self.fanout = FanOut(engine, celery, LineParser(registry, settings), worker_id)
        self.finalizer = Finalizer(engine, worker_id, settings.result_retention_seconds)

    def advance(self, batch_id: str) -> None:
        """Do the batch's next step, if it has one and no live worker is on it."""
        batch = self._load(batch_id)
        if batch is not None and batch.status == "validating" and batch.worker_id is None:
            self.fanout.run(batch)
            # A small batch may have finished (or been cancelled) while it fanned out.
            batch = self._load(batch_id)
            if batch is not None and batch.status == "failed":
                self.stop_jobs(batch.id)  # a fan-out the database refused halfway
        if batch is None or batch.worker_id is not None:
            return
        if batch.status == "in_progress":
            self._in_progress(batch)
        elif batch.status == "cancelling":
            self.stop_jobs(batch.id)
            self._finish(batch.id, "cancelling")
        elif batch.status == "finalizing":
            self._finish(batch.id, "finalizing")

    def on_job_finished(self, job: Job) -> None:
        """Finish hook: when a batch's last unfinished job ends, the batch moves on."""
        batch_id = job.batch_id  # the finished row's own: no query for a job of no batch
        if batch_id is None:
            return
        with self.engine.connect() as conn:
            if conn.execute(sa.select(queries.has_jobs_in(batch_id, queries.UNFINISHED))).scalar():
                return
        self.advance(batch_id)

    def stop_jobs(self, batch_id: str) -> None:
        """Cancel the batch's queued jobs and ask its running ones to stop."""
        with self.engine.begin() as conn:
            result = conn.execute(queries.cancel_queued(batch_id, utcnow()))
            cancelled = [Job.from_row(r) for r in result]
            running = list(conn.execute(queries.flag_running(batch_id)).scalars())
        if not cancelled and not running:
            return
        pipe = self.redis.pipeline(transaction=False)
        if running:
            request_stops(pipe, running, self.settings.visibility_timeout_seconds)
        for job in cancelled:
            # Readers of the job's event stream see it end, as for a single cancelled job.
            stream = redis_keys.job_stream(job.id)
            pipe.xadd(stream, terminal_entry(job))  # type: ignore[arg-type]
            pipe.expire(stream, self.settings.result_ttl_seconds)
        pipe.execute()
        log.info(
            "batch %s: %d queued jobs cancelled, %d asked to stop",
            batch_id,
            len(cancelled),
            len(running),
        )

    def _in_progress(self, batch: Any) -> None:
        expired = utcnow() >= batch.expires_at
        if expired:
            self.stop_jobs(batch.id)
        outcome = "expired" if expired else "completed"
        if self.finalizer.lease(batch.id, "in_progress", outcome):
            self.finalizer.write(batch.id)
        elif not expired:
            self._republish_stalled(batch.id)

    def _finish(self, batch_id: str, status: str) -> None:
        if self.finalizer.lease(batch_id, status):
            self.finalizer.write(batch_id)

    def _republish_stalled(self, batch_id: str) -> None:
        """Publish again the queued jobs of a batch that nothing is working on.

        On Redis, a message a worker took before it was killed comes back only after the
        visibility timeout (hours). Queued jobs with none running and an empty queue can
        only have such lost messages; a second message for a job still in flight is
        dropped by the claim.
        """
        if not self.settings.broker_is_redis():
            return  # AMQP brokers hand a dead consumer's messages on by themselves
        with self.engine.connect() as conn:
            if conn.execute(sa.select(queries.has_jobs_in(batch_id, ("running",)))).scalar():
                return
            queued = conn.execute(
                sa.select(jobs.c.id, jobs.c.model).where(
                    jobs.c.batch_id == batch_id, jobs.c.status == "queued"
                )
            ).all()
        if not queued or self._queued_messages() != 0:
            return
        log.warning(
            "batch %s: %d queued jobs have no message; publishing again", batch_id, len(queued)
        )
        for row in queued:
            enqueue(self.celery, row.id, self.registry.pool_of(row.model), "low")

    def _queued_messages(self) -> int | None:
        """Messages waiting in the low-priority queues (None if the broker cannot say)."""
        try:
            with self.celery.connection_for_write() as connection:
                channel = connection.default_channel
                return sum(queue_length(channel, queue_name(pool, "low")) for pool in POOLS)
        except Exception as exc:
            log.warning("could not size the queues: %s", exc)
            return None

    def _load(self, batch_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(queries.batch_by_id(batch_id)).first()
