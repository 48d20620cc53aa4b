"""Job and API-key persistence for the API process (async). No HTTP or queue knowledge."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.db.tables import jobs, webhook_deliveries
from inferq.group_commit import GroupCommit
from inferq.jobs.schemas import Job, JobCreate
from inferq.observability.logs import current_request_id
from inferq.webhooks.rows import waiting_delivery


def utcnow() -> datetime:
    return datetime.now(UTC)


def _encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = orjson.dumps([created_at.isoformat(), job_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raise ValueError on anything that is not a cursor this module made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = orjson.loads(raw)
        return datetime.fromisoformat(created), str(job_id)
    except (TypeError, ValueError) as exc:
        raise ValueError("not a cursor") from exc


EMPTY_RESULT: dict[str, Any] = {
    "output_text": None,
    "finish_reason": None,
    "prompt_tokens": None,
    "completion_tokens": None,
    "error_type": None,
    "error_message": None,
    "started_at": None,
    "finished_at": None,
}


@dataclass(frozen=True)
class NewJob:
    """A job about to be inserted: `payload` is what the worker's handler for `kind` reads."""

    key_id: str
    model: str
    priority: str
    payload: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    kind: str = "generate"
    batch_id: str | None = None
    custom_id: str | None = None
    webhook_url: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Read where the job is made: in the API, the request being served.
    request_id: str | None = field(default_factory=current_request_id)

    @classmethod
    def generation(
        cls,
        key_id: str,
        job: JobCreate,
        stream: bool = True,
        history: int | None = None,
        **fields: Any,
    ) -> NewJob:
        """A chat or completion job from its validated request; `stream=False` when the
        caller waits for the whole answer (no live deltas are written). `history`: how
        many of its messages came from its conversation."""
        payload = job.generation(stream).payload()
        if history is not None:
            payload["conversation"] = {"id": job.conversation_id, "history": history}
        return cls(
            key_id=key_id,
            model=job.model,
            priority=job.priority,
            payload=payload,
            metadata=job.metadata,
            webhook_url=job.webhook.url if job.webhook else None,
            **fields,
        )

    def row(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "key_id": self.key_id,
            "kind": self.kind,
            "model": self.model,
            "priority": self.priority,
            "status": "queued",
            "request": self.payload,
            "metadata": self.metadata,
            "batch_id": self.batch_id,
            "custom_id": self.custom_id,
            "webhook_url": self.webhook_url,
            "request_id": self.request_id,
            "attempts": 0,
            "cancel_requested": False,
            "created_at": now,
        }


_INSERT_JOB = jobs.insert()


class JobStore:
    """Reads and writes job rows on behalf of API keys."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # Rows of concurrent submits go in together (one multi-row INSERT); a row that
        # breaks a constraint is then inserted alone, failing only its own request.
        self._rows = GroupCommit(self._insert_rows, isolate=(sa.exc.IntegrityError,))

    async def insert(self, new: NewJob) -> Job:
        """Insert one queued job of any kind and commit it."""
        row = new.row(utcnow())
        if new.webhook_url is None:
            await self._rows.write(row)
        else:
            async with self.engine.begin() as conn:
                await conn.execute(_INSERT_JOB, row)
                delivery = waiting_delivery(new.id, new.key_id, new.webhook_url, row["created_at"])
                await conn.execute(webhook_deliveries.insert(), delivery)
        return Job.from_row({**EMPTY_RESULT, **row})

    async def _insert_rows(self, rows: list[dict[str, Any]]) -> None:
        # insert() with the rows as parameters, not .values(**row): the statement is then
        # the same every time and SQLAlchemy compiles it once, not per request.
        if len(rows) > 1:
            # One transaction: a failed batch leaves no row, so each can go in alone.
            async with self.engine.begin() as conn:
                await conn.execute(_INSERT_JOB, rows)
            return
        # One statement: autocommit saves the BEGIN and COMMIT round trips.
        async with self.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(_INSERT_JOB, rows[0])

    async def insert_many(self, new_jobs: Sequence[NewJob]) -> list[str]:
        """Insert queued jobs in one transaction; returns their ids in order."""
        now = utcnow()
        rows = [n.row(now) for n in new_jobs]
        if rows:
            async with self.engine.begin() as conn:
                await conn.execute(jobs.insert(), rows)
        return [r["id"] for r in rows]

    async def get(self, key_id: str, job_id: str) -> Job | None:
        """The job, if it exists and belongs to this key."""
        query = jobs.select().where(jobs.c.id == job_id, jobs.c.key_id == key_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return Job.from_row(row) if row else None

    async def statuses(self, key_id: str, job_ids: Sequence[str]) -> dict[str, str]:
        """The status of each of this key's jobs among `job_ids` that exists."""
        found: dict[str, str] = {}
        async with self.engine.connect() as conn:
            for start in range(0, len(job_ids), 500):  # bounded IN lists
                chunk = job_ids[start : start + 500]
                query = sa.select(jobs.c.id, jobs.c.status).where(
                    jobs.c.key_id == key_id, jobs.c.id.in_(chunk)
                )
                found.update({row.id: row.status for row in await conn.execute(query)})
        return found

    async def list(
        self, key_id: str, status: str | None, cursor: tuple[datetime, str] | None, limit: int
    ) -> tuple[Sequence[Job], str | None]:
        """A page of this key's jobs, newest first, and the cursor of the next page."""
        query = jobs.select().where(jobs.c.key_id == key_id)
        if status:
            query = query.where(jobs.c.status == status)
        if cursor:
            created, job_id = cursor
            query = query.where(
                sa.or_(
                    jobs.c.created_at < created,
                    sa.and_(jobs.c.created_at == created, jobs.c.id < job_id),
                )
            )
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        page = [Job.from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return page, _encode_cursor(page[-1].created_at, page[-1].id) if more and page else None

    async def cancel_queued(self, key_id: str, job_id: str) -> bool:
        """queued → cancelled; False if the job was no longer queued."""
        return await self._update(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.key_id == key_id, jobs.c.status == "queued")
            .values(status="cancelled", finished_at=utcnow(), finish_reason="cancelled")
        )

    async def request_cancel(self, key_id: str, job_id: str) -> bool:
        """Mark a running job for cancellation; False if it was not running."""
        return await self._update(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.key_id == key_id, jobs.c.status == "running")
            .values(cancel_requested=True)
        )

    async def fail_unqueued(self, job_id: str, message: str) -> None:
        """The broker refused the job: end it rather than leave it queued forever."""
        await self._update(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == "queued")
            .values(
                status="failed",
                finished_at=utcnow(),
                error_type="queue_unavailable",
                error_message=message,
            )
        )

    async def _update(self, statement: sa.Update) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)

    async def count_queued(self) -> int:
        query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == "queued")
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
