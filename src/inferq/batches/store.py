"""Batch rows for the API (async): create, read, list, cancel. No fan-out happens here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferq.batches import queries
from inferq.batches.objects import batch_object
from inferq.db.tables import batches, files
from inferq.errors import InvalidRequest, NotFound
from inferq.files.store import unexpired
from inferq.jobs.schemas import Job
from inferq.jobs.store import utcnow
from inferq.oai.paging import after_clause, list_object, order_by

COMPLETION_WINDOW = timedelta(hours=24)


@dataclass
class Cancellation:
    """What `cancel` did: the batch as it now is, and the jobs it stopped."""

    batch: dict[str, Any]
    started: bool
    cancelled_jobs: list[Job] = field(default_factory=list)
    running_job_ids: list[str] = field(default_factory=list)


class BatchStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        key_id: str,
        input_file_id: str,
        endpoint: str,
        metadata: dict[str, str] | None,
        output_expires_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Store a `validating` batch; a worker fans it out into jobs."""
        query = sa.select(files.c.purpose).where(
            files.c.id == input_file_id, files.c.key_id == key_id, unexpired()
        )
        now = utcnow()
        batch_id = f"batch_{uuid.uuid4().hex}"
        row = {
            "id": batch_id,
            "key_id": key_id,
            "endpoint": endpoint,
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "validating",
            "metadata": metadata,
            "output_expires_seconds": output_expires_seconds,
            "total": 0,
            "created_at": now,
            "expires_at": now + COMPLETION_WINDOW,
        }
        async with self.engine.begin() as conn:
            found = (await conn.execute(query)).first()
            if found is None:
                raise NotFound(f"no file {input_file_id!r}")
            if found.purpose != "batch":
                raise InvalidRequest(
                    f"file {input_file_id!r} has purpose {found.purpose!r}; a batch needs 'batch'"
                )
            await conn.execute(batches.insert().values(**row))
            stored = (await conn.execute(queries.batch_by_id(batch_id))).one()
        return batch_object(stored, {})

    async def get(self, key_id: str, batch_id: str) -> dict[str, Any] | None:
        query = queries.batch_by_id(batch_id).where(batches.c.key_id == key_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            return (await _render(conn, [row]))[0]

    async def list(self, key_id: str, after: str | None, limit: int) -> dict[str, Any]:
        """A page of the key's batches, newest first."""
        query = sa.select(batches).where(batches.c.key_id == key_id)
        async with self.engine.connect() as conn:
            if after:
                query = query.where(await after_clause(conn, batches, key_id, after, True))
            query = query.order_by(*order_by(batches, True)).limit(limit + 1)
            rows = (await conn.execute(query)).all()
            return list_object(await _render(conn, rows), limit)

    async def cancel(self, key_id: str, batch_id: str) -> Cancellation | None:
        """validating or in_progress → cancelling; queued jobs end now, running ones are flagged.

        One transaction: its first statement locks the batch row, so a fan-out adding jobs
        either committed them before (and they are cancelled here) or sees `cancelling`
        and adds no more.
        """
        now = utcnow()
        start = (
            sa.update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.key_id == key_id,
                batches.c.status.in_(("validating", "in_progress")),
            )
            .values(status="cancelling", cancelling_at=now)
        )
        async with self.engine.begin() as conn:
            started = bool((await conn.execute(start)).rowcount)
            cancelled: list[Job] = []
            running: list[str] = []
            if started:
                result = await conn.execute(queries.cancel_queued(batch_id, now))
                cancelled = [Job.from_row(r) for r in result]
                running = [r.id for r in await conn.execute(queries.flag_running(batch_id))]
            row = (
                await conn.execute(queries.batch_by_id(batch_id).where(batches.c.key_id == key_id))
            ).first()
            if row is None:
                return None
            rendered = (await _render(conn, [row]))[0]
        return Cancellation(rendered, started, cancelled, running)

    async def fail(self, batch_id: str, code: str, message: str) -> None:
        """A batch that could not be handed to a worker ends `failed` with the reason."""
        errors = {"object": "list", "data": [_error(code, message)]}
        statement = (
            sa.update(batches)
            .where(batches.c.id == batch_id, batches.c.status == "validating")
            .values(status="failed", failed_at=utcnow(), errors=errors)
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": None}


async def _render(conn: AsyncConnection, rows: Any) -> list[dict[str, Any]]:
    """Batch objects, with the request counts of all of them from one query."""
    ids = [r.id for r in rows]
    counts = queries.counts_of((await conn.execute(queries.count_by_status(ids))).all())
    return [batch_object(r, counts.get(r.id, {})) for r in rows]
