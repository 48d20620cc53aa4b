"""Result expiry: a finished job's prompt and answer are deleted after the retention.

The row stays, with its status, usage, cost, error and metadata, so `GET /v1/usage` and
the job's own page still tell what happened; its request, output text and result go,
and `expired_at` says when. Streams in Redis expire on their own after
`INFERQ_RESULT_TTL_SECONDS`; this is the database's side of the same promise (and a
stream still there when its job expires is deleted with it).

A job is left alone while something still reads its result: a batch not yet finished
(its output file is written from the rows) or a webhook not yet delivered.

Every `interval` one worker (a Redis lock) expires what is due, a few hundred rows per
transaction so no statement holds many row locks for long.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Self

import redis
import sqlalchemy as sa

from inferq import redis_keys
from inferq.config import Settings
from inferq.db.tables import batches, jobs, webhook_deliveries
from inferq.jobs.schemas import TERMINAL_STATUSES
from inferq.jobs.store import utcnow
from inferq.observability.metrics import RESULTS_EXPIRED
from inferq.sweeps import LockedSweep
from inferq.webhooks.deliveries import PENDING
from inferq.webhooks.rows import WAITING

log = logging.getLogger(__name__)
# Rows per transaction.
CHUNK = 500
# Batches whose output is still to be written from their jobs' rows.
UNFINISHED_BATCHES = ("validating", "in_progress", "finalizing", "cancelling")


class ResultExpiry(LockedSweep):
    lock = redis_keys.EXPIRY_LOCK
    what = "result expiry"

    def __init__(
        self,
        engine: sa.Engine,
        client: redis.Redis,
        retention_seconds: int,
        interval_seconds: float,
    ) -> None:
        super().__init__(client, interval_seconds)
        self.engine = engine
        self.retention = timedelta(seconds=retention_seconds)

    @classmethod
    def from_settings(cls, engine: sa.Engine, client: redis.Redis, settings: Settings) -> Self:
        return cls(
            engine,
            client,
            settings.result_retention_seconds,
            settings.result_expiry_interval_seconds,
        )

    def start(self) -> None:
        if self.retention:  # 0 keeps results for good
            super().start()

    def run_pass(self) -> int:
        """How many jobs' results it deleted."""
        if not self.retention:
            return 0
        cutoff = utcnow() - self.retention
        expired = 0
        while not self.stopping:
            done = self._expire_chunk(cutoff)
            expired += done
            if done < CHUNK:
                break
        if expired:
            RESULTS_EXPIRED.inc(expired)
            log.info("deleted the results of %d jobs finished before %s", expired, cutoff)
        return expired

    def _expire_chunk(self, cutoff: datetime) -> int:
        due = (
            sa.select(jobs.c.id)
            .where(
                jobs.c.expired_at.is_(None),
                jobs.c.finished_at < cutoff,
                jobs.c.status.in_(TERMINAL_STATUSES),
                ~_batch_unfinished(),
                ~_webhook_undelivered(),
            )
            .limit(CHUNK)
        )
        with self.engine.begin() as conn:
            ids = list(conn.execute(due).scalars())
            if not ids:
                return 0
            statement = (
                sa.update(jobs)
                .where(jobs.c.id.in_(ids), jobs.c.expired_at.is_(None))
                .values(request={}, output_text=None, result=None, expired_at=utcnow())
            )
            expired = int(conn.execute(statement).rowcount)
        # A stream that outlived its TTL setting (a retention shorter than it) goes too.
        self.client.delete(*(redis_keys.job_stream(job_id) for job_id in ids))
        return expired


def _batch_unfinished() -> sa.Exists:
    return sa.exists().where(
        batches.c.id == jobs.c.batch_id, batches.c.status.in_(UNFINISHED_BATCHES)
    )


def _webhook_undelivered() -> sa.Exists:
    return sa.exists().where(
        webhook_deliveries.c.job_id == jobs.c.id,
        webhook_deliveries.c.status.in_((WAITING, PENDING)),
    )


__all__ = ["ResultExpiry"]
