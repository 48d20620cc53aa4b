"""The batch sweep: hands on what a crash or a lost message left unfinished.

Every `interval` one worker (a Redis lock) looks for batches that may need a step:
validating ones (fan-out never ran, or died), finalizing and cancelling ones, and in-
progress ones that are past their expiry or have no job running. A batch held by a
worker whose alive key has expired is let go first. Each is then handed to the workers
(the advance task), at most once per `redispatch_seconds`, so a step that is merely
waiting in the queue is not piled up.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
import sqlalchemy as sa
from celery import Celery

from inferq import redis_keys
from inferq.batches import queries
from inferq.batches.dispatch import send_advance
from inferq.db.tables import batches
from inferq.jobs.store import utcnow
from inferq.sweeps import LockedSweep

log = logging.getLogger(__name__)


class BatchSweeper(LockedSweep):
    lock = redis_keys.BATCH_SWEEP_LOCK
    what = "batch sweep"

    def __init__(
        self,
        engine: sa.Engine,
        client: redis.Redis,
        celery: Celery,
        interval_seconds: float,
        redispatch_seconds: int,
    ) -> None:
        super().__init__(client, interval_seconds)
        self.engine = engine
        self.celery = celery
        self.redispatch = redispatch_seconds

    def run_pass(self) -> int:
        """How many batches it handed to the workers."""
        rows = self._candidates()
        alive = self._alive({r.worker_id for r in rows if r.worker_id})
        handed = 0
        for row in rows:
            if row.worker_id in alive:
                continue
            if row.worker_id is not None:
                log.warning("batch %s lost its worker %s", row.id, row.worker_id)
                self._release(row.id, row.worker_id)
            handed += self._dispatch(row.id)
        return handed

    def _candidates(self) -> list[Any]:
        in_progress = sa.and_(
            batches.c.status == "in_progress",
            sa.or_(
                batches.c.expires_at <= utcnow(),
                ~queries.has_jobs_in(batches.c.id, ("running",)),
            ),
        )
        query = sa.select(batches.c.id, batches.c.worker_id).where(
            sa.or_(batches.c.status.in_(("validating", "finalizing", "cancelling")), in_progress)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def _alive(self, workers: set[str]) -> set[str]:
        ordered = sorted(workers)
        if not ordered:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for worker_id in ordered:
            pipe.exists(redis_keys.worker_alive(worker_id))
        return {w for w, present in zip(ordered, pipe.execute(), strict=True) if present}

    def _release(self, batch_id: str, worker_id: str) -> None:
        statement = (
            sa.update(batches)
            .where(batches.c.id == batch_id, batches.c.worker_id == worker_id)
            .values(worker_id=None)
        )
        with self.engine.begin() as conn:
            conn.execute(statement)

    def _dispatch(self, batch_id: str) -> int:
        key = redis_keys.batch_dispatched(batch_id)
        if not self.client.set(key, b"1", nx=True, ex=self.redispatch):
            return 0
        send_advance(self.celery, batch_id)
        return 1
