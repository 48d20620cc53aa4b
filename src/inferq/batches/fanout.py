"""Fan-out: a validating batch's lines become low-priority jobs on the queue.

It runs in a worker, never in the API request. It can be run again after a crash at
any point: job ids are derived from the batch and the line, rows that exist are left
alone, and only jobs still queued are published (a duplicate message is harmless: the
claim lets one delivery run a job).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from celery import Celery

from inferq.batches import queries
from inferq.batches.lines import BatchLine, LineError, LineParser
from inferq.db.tables import batches, files, jobs
from inferq.errors import first_line
from inferq.jobs.outage import UNREACHABLE
from inferq.jobs.store import NewJob, utcnow
from inferq.queue import enqueue

log = logging.getLogger(__name__)

# Jobs inserted (and published) per transaction: large batches start running early, and
# a cancel waits for at most one chunk.
CHUNK = 500
# The most line errors a failed batch keeps in `errors`.
MAX_ERRORS = 1000


class FanOut:
    def __init__(self, engine: sa.Engine, celery: Celery, parser: LineParser, worker_id: str):
        self.engine = engine
        self.celery = celery
        self.parser = parser
        self.worker_id = worker_id

    def run(self, batch: Any) -> None:
        """Turn the batch's lines into jobs and move it to `in_progress` (or `failed`)."""
        if not self.claim(batch.id):
            return  # another worker has it, or it has moved on
        try:
            self._run(batch)
        except sa.exc.StatementError as exc:
            if isinstance(exc, UNREACHABLE):
                raise
            # The database refused the rows themselves: every pass would fail the same
            # way, and the batch would stay validating for good. The runner then cancels
            # the jobs of the chunks that went in.
            log.exception("batch %s: the database refused its jobs", batch.id)
            refused = f"the database refused the batch's jobs: {first_line(exc)}"
            self._fail(batch.id, [LineError(None, refused, code="database_refused")])
        finally:
            # After a failure (the broker, an unreachable database) the sweep hands it
            # out again.
            self._release(batch.id)

    def _run(self, batch: Any) -> None:
        content = self._input(batch)
        if content is None:
            missing = f"the input file {batch.input_file_id!r} no longer exists"
            self._fail(batch.id, [LineError(None, missing, code="file_not_found")])
            return
        parsed = self.parser.parse(content)
        errors = parsed.errors + _endpoint_errors(parsed.lines, batch.endpoint)
        if errors:
            self._fail(batch.id, errors)
            return
        if not self._update(batch.id, total=len(parsed.lines)):
            return
        for chunk in _chunks(parsed.lines, CHUNK):
            queued = self.insert_chunk(batch, chunk)
            if queued is None:
                log.info("batch %s: fan-out stopped, the batch is no longer validating", batch.id)
                return
            for job_id, pool in queued:
                enqueue(self.celery, job_id, pool, "low")
        if self._update(batch.id, status="in_progress", in_progress_at=utcnow(), worker_id=None):
            log.info("batch %s: %d jobs queued", batch.id, len(parsed.lines))

    def _input(self, batch: Any) -> bytes | None:
        query = sa.select(files.c.content).where(
            files.c.id == batch.input_file_id, files.c.key_id == batch.key_id
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return bytes(row.content) if row else None

    def insert_chunk(self, batch: Any, chunk: Sequence[BatchLine]) -> list[tuple[str, str]] | None:
        """Insert the chunk's jobs; (id, pool) of those still queued, None if cancelled."""
        now = utcnow()
        rows = [{**_new_job(batch, line).row(now), "batch_index": line.index} for line in chunk]
        pools = {row["id"]: line.pool for row, line in zip(rows, chunk, strict=True)}
        with self.engine.begin() as conn:
            # Locks the batch row first: a concurrent cancel either sees these jobs or
            # makes this check fail.
            if not self._still_ours(conn, batch.id):
                return None
            queries.insert_new(conn, jobs, rows)
            queued = conn.execute(
                sa.select(jobs.c.id).where(jobs.c.id.in_(pools), jobs.c.status == "queued")
            ).scalars()
            return [(job_id, pools[job_id]) for job_id in queued]

    def _still_ours(self, conn: sa.Connection, batch_id: str) -> bool:
        touch = (
            sa.update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.status == "validating",
                batches.c.worker_id == self.worker_id,
            )
            .values(worker_id=self.worker_id)
        )
        return bool(conn.execute(touch).rowcount)

    def _fail(self, batch_id: str, errors: list[LineError]) -> None:
        data = [e.as_batch_error() for e in errors[:MAX_ERRORS]]
        self._update(
            batch_id,
            status="failed",
            failed_at=utcnow(),
            errors={"object": "list", "data": data},
            worker_id=None,
        )
        log.info("batch %s failed validation: %d bad lines", batch_id, len(errors))

    def claim(self, batch_id: str) -> bool:
        """Take the validating batch if no worker holds it."""
        return self._execute(
            sa.update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.status == "validating",
                batches.c.worker_id.is_(None),
            )
            .values(worker_id=self.worker_id)
        )

    def _release(self, batch_id: str) -> None:
        """Let go of the batch (a no-op once it has moved on)."""
        self._execute(
            sa.update(batches)
            .where(batches.c.id == batch_id, batches.c.worker_id == self.worker_id)
            .values(worker_id=None)
        )

    def _update(self, batch_id: str, **values: Any) -> bool:
        """Update the batch while it is validating and this worker holds it."""
        return self._execute(
            sa.update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.status == "validating",
                batches.c.worker_id == self.worker_id,
            )
            .values(**values)
        )

    def _execute(self, statement: sa.Update) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(statement).rowcount)


def _new_job(batch: Any, line: BatchLine) -> NewJob:
    return NewJob(
        key_id=batch.key_id,
        model=line.job.model,
        priority="low",
        payload=line.job.generation().payload(),
        metadata=line.job.metadata,
        batch_id=batch.id,
        custom_id=line.custom_id,
        id=queries.job_id_for(batch.id, line.index),
    )


def _endpoint_errors(lines: Sequence[BatchLine], endpoint: str) -> list[LineError]:
    return [
        LineError(line.line, f"url {line.url} is not the batch's endpoint {endpoint}", "url")
        for line in lines
        if line.url != endpoint
    ]


def _chunks(lines: Sequence[BatchLine], size: int) -> Iterator[Sequence[BatchLine]]:
    for start in range(0, len(lines), size):
        yield lines[start : start + size]
