"""The last step of a batch: write its result files and give it its final status.

Exactly one worker does it: `lease` is a conditional UPDATE that only succeeds while
no job of the batch is unfinished and no live worker holds the batch. `write` builds the
files and stores them in the same transaction as the final status, so a worker that dies
halfway leaves no file behind and the next one writes them whole. The files expire after
the batch's `output_expires_after`, or else the result retention, as its jobs' answers do.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from inferq.batches import queries
from inferq.batches.results import result_files
from inferq.db.tables import batches, files, jobs
from inferq.files.store import expiry, file_row
from inferq.jobs.store import utcnow

log = logging.getLogger(__name__)


class Finalizer:
    def __init__(self, engine: sa.Engine, worker_id: str, retention_seconds: int) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.retention_seconds = retention_seconds

    def lease(self, batch_id: str, status: str, outcome: str = "completed") -> bool:
        """Hold the batch for its last step if all its jobs have ended.

        From `in_progress` the batch moves to `finalizing`, remembering the `outcome` it
        ends with; `cancelling` and `finalizing` batches keep their status.
        """
        values: dict[str, Any] = {"worker_id": self.worker_id}
        if status == "in_progress":
            values.update(status="finalizing", finalizing_at=utcnow(), outcome=outcome)
        statement = (
            sa.update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.status == status,
                batches.c.worker_id.is_(None),
                ~queries.has_jobs_in(batch_id, queries.UNFINISHED),
            )
            .values(**values)
        )
        with self.engine.begin() as conn:
            return bool(conn.execute(statement).rowcount)

    def write(self, batch_id: str) -> str | None:
        """Store the result files and the final status; the status, or None if not ours."""
        with self.engine.begin() as conn:
            batch = conn.execute(queries.batch_by_id(batch_id)).first()
            if batch is None or batch.worker_id != self.worker_id:
                return None
            final = "cancelled" if batch.status == "cancelling" else batch.outcome or "completed"
            rows = conn.execute(
                sa.select(jobs).where(jobs.c.batch_id == batch_id).order_by(jobs.c.batch_index)
            ).all()
            output, errors = result_files(rows, batch.endpoint, final)
            now = utcnow()
            expires_at = expiry(now, batch.output_expires_seconds or self.retention_seconds)
            stored = [
                file_row(
                    batch.key_id,
                    "batch_output",
                    f"{batch_id}_{name}.jsonl",
                    content,
                    now,
                    expires_at,
                )
                if content
                else None
                for name, content in (("output", output), ("error", errors))
            ]
            done = conn.execute(
                sa.update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.status == batch.status,
                    batches.c.worker_id == self.worker_id,
                )
                .values(
                    status=final,
                    worker_id=None,
                    output_file_id=stored[0]["id"] if stored[0] else None,
                    error_file_id=stored[1]["id"] if stored[1] else None,
                    **{f"{final}_at": now},
                )
            )
            if not done.rowcount:
                return None
            for row in stored:
                if row is not None:
                    conn.execute(files.insert().values(**row))
        log.info("batch %s %s: %d requests", batch_id, final, len(rows))
        return final
