"""SQL on a batch's jobs, shared by the API (async) and the workers (sync).

The request counts are never stored: they are the batch's jobs counted by status, so
they cannot drift from what actually ran.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from inferq.db.tables import batches, jobs

UNFINISHED = ("queued", "running")
# Statuses in which a batch still has work to do (or to hand over after a crash).
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
# The ids of a batch's jobs are a function of the batch and the line, so a fan-out that
# runs again after a crash finds the jobs it already made instead of adding new ones.
_JOB_NAMESPACE = uuid.UUID("5b0d6a0e-4f0c-4a55-9a53-6c1f3b1b7c2e")


def job_id_for(batch_id: str, index: int) -> str:
    return str(uuid.uuid5(_JOB_NAMESPACE, f"{batch_id}/{index}"))


def has_jobs_in(batch_id: Any, statuses: Sequence[str]) -> sa.Exists:
    """EXISTS a job of the batch in one of `statuses` (`batch_id` may be a column)."""
    return sa.exists().where(jobs.c.batch_id == batch_id, jobs.c.status.in_(statuses))


def cancel_queued(batch_id: str, now: datetime) -> sa.Update:
    """Every queued job of the batch → cancelled, in one statement; returns the jobs."""
    return (
        sa.update(jobs)
        .where(jobs.c.batch_id == batch_id, jobs.c.status == "queued")
        .values(status="cancelled", finished_at=now, finish_reason="cancelled")
        .returning(*jobs.c)
    )


def flag_running(batch_id: str) -> sa.Update:
    """Ask the batch's running jobs to stop; returns the ids newly flagged."""
    return (
        sa.update(jobs)
        .where(
            jobs.c.batch_id == batch_id,
            jobs.c.status == "running",
            jobs.c.cancel_requested.is_(False),
        )
        .values(cancel_requested=True)
        .returning(jobs.c.id)
    )


def count_by_status(batch_ids: Sequence[str]) -> sa.Select[Any]:
    return (
        sa.select(jobs.c.batch_id, jobs.c.status, sa.func.count())
        .where(jobs.c.batch_id.in_(batch_ids))
        .group_by(jobs.c.batch_id, jobs.c.status)
    )


def counts_of(rows: Sequence[Any]) -> dict[str, dict[str, int]]:
    """{batch id: {job status: count}} from `count_by_status` rows."""
    counts: dict[str, dict[str, int]] = {}
    for batch_id, status, count in rows:
        counts.setdefault(batch_id, {})[status] = int(count)
    return counts


def batch_by_id(batch_id: str) -> sa.Select[Any]:
    return sa.select(batches).where(batches.c.id == batch_id)


def insert_new(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert the rows whose id is not there yet (the rest are left as they are)."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(postgresql.insert(table).on_conflict_do_nothing(index_elements=["id"]), rows)
    elif dialect == "sqlite":
        conn.execute(sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"]), rows)
    else:
        raise RuntimeError(f"no insert-if-absent for {dialect}")
