"""File expiry: a file whose `expires_at` has passed is deleted, bytes and row.

The API hides such a file at once (`inferq.files.store.unexpired`); this pass frees its
space. A batch's input file waits while the batch is unfinished (its fan-out reads it).
Every `interval` one worker (a Redis lock) deletes what is due, a few hundred rows per
transaction.
"""

from __future__ import annotations

import logging

import redis
import sqlalchemy as sa

from inferq import redis_keys
from inferq.db.tables import batches, files
from inferq.jobs.expiry import UNFINISHED_BATCHES
from inferq.jobs.store import utcnow
from inferq.observability.metrics import FILES_EXPIRED
from inferq.sweeps import LockedSweep

log = logging.getLogger(__name__)
# Rows per transaction: each carries its bytes, so fewer than the jobs' expiry takes.
CHUNK = 100


class FileExpiry(LockedSweep):
    lock = redis_keys.FILE_EXPIRY_LOCK
    what = "file expiry"

    def __init__(self, engine: sa.Engine, client: redis.Redis, interval_seconds: float) -> None:
        super().__init__(client, interval_seconds)
        self.engine = engine

    def run_pass(self) -> int:
        """How many files it deleted."""
        deleted = 0
        while not self.stopping:
            done = self._delete_chunk()
            deleted += done
            if done < CHUNK:
                break
        if deleted:
            FILES_EXPIRED.inc(deleted)
            log.info("deleted %d expired files", deleted)
        return deleted

    def _delete_chunk(self) -> int:
        now = utcnow()
        in_use = sa.exists().where(
            batches.c.input_file_id == files.c.id, batches.c.status.in_(UNFINISHED_BATCHES)
        )
        due = sa.select(files.c.id).where(files.c.expires_at <= now, ~in_use).limit(CHUNK)
        with self.engine.begin() as conn:
            ids = list(conn.execute(due).scalars())
            if not ids:
                return 0
            statement = sa.delete(files).where(files.c.id.in_(ids), files.c.expires_at <= now)
            return int(conn.execute(statement).rowcount)


__all__ = ["FileExpiry"]
