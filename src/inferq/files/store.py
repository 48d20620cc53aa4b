"""File rows (async, API side). The bytes are stored in the row itself.

Queries name their columns: only `content` reads the bytes, so listing files never
loads them. A file past its `expires_at` is gone to the client at once, whether or not
the file expiry (`inferq.files.expiry`) has deleted its row yet.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.db.tables import files
from inferq.jobs.store import utcnow
from inferq.oai.paging import after_clause, list_object, order_by, unix

# Every column but the bytes.
INFO_COLUMNS = (
    files.c.id,
    files.c.purpose,
    files.c.filename,
    files.c.bytes,
    files.c.created_at,
    files.c.expires_at,
)
# The longest expiry a client may ask for: ten years (OpenAI's own range is an hour to
# thirty days; this one also takes shorter and longer).
MAX_EXPIRY_SECONDS = 10 * 365 * 86400


class ExpiresAfter(BaseModel):
    """OpenAI's expiration policy of a file: `seconds` after its creation."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: int = Field(ge=1, le=MAX_EXPIRY_SECONDS)


def expiry(now: datetime, seconds: int | None) -> datetime | None:
    """When a file made `now` expires; None (or 0) seconds: never."""
    return now + timedelta(seconds=seconds) if seconds else None


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def file_row(
    key_id: str,
    purpose: str,
    filename: str,
    content: bytes,
    now: datetime,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "id": new_file_id(),
        "key_id": key_id,
        "purpose": purpose,
        "filename": filename,
        "bytes": len(content),
        "content": content,
        "created_at": now,
        "expires_at": expires_at,
    }


def file_object(row: Any) -> dict[str, Any]:
    """OpenAI's file object."""
    m = row._mapping if hasattr(row, "_mapping") else row
    return {
        "id": m["id"],
        "object": "file",
        "bytes": m["bytes"],
        "created_at": unix(m["created_at"]),
        "filename": m["filename"],
        "purpose": m["purpose"],
        "status": "processed",
        "status_details": None,
        "expires_at": unix(m["expires_at"]),
    }


class FileStore:
    """The files of API keys."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        key_id: str,
        purpose: str,
        filename: str,
        content: bytes,
        expires_after_seconds: int | None = None,
    ) -> dict[str, Any]:
        now = utcnow()
        row = file_row(key_id, purpose, filename, content, now, expiry(now, expires_after_seconds))
        async with self.engine.begin() as conn:
            await conn.execute(files.insert().values(**row))
        return file_object(row)

    async def get(self, key_id: str, file_id: str) -> dict[str, Any] | None:
        query = sa.select(*INFO_COLUMNS).where(
            files.c.id == file_id, files.c.key_id == key_id, unexpired()
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return file_object(row) if row else None

    async def content(self, key_id: str, file_id: str) -> bytes | None:
        query = sa.select(files.c.content).where(
            files.c.id == file_id, files.c.key_id == key_id, unexpired()
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return bytes(row.content) if row else None

    async def delete(self, key_id: str, file_id: str) -> bool:
        statement = sa.delete(files).where(
            files.c.id == file_id, files.c.key_id == key_id, unexpired()
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)

    async def list(
        self, key_id: str, purpose: str | None, after: str | None, limit: int, descending: bool
    ) -> dict[str, Any]:
        query = sa.select(*INFO_COLUMNS).where(files.c.key_id == key_id, unexpired())
        if purpose:
            query = query.where(files.c.purpose == purpose)
        async with self.engine.connect() as conn:
            if after:
                query = query.where(await after_clause(conn, files, key_id, after, descending))
            query = query.order_by(*order_by(files, descending)).limit(limit + 1)
            rows = (await conn.execute(query)).all()
        return list_object([file_object(r) for r in rows], limit)


def unexpired() -> sa.ColumnElement[bool]:
    """Files the client may still see."""
    return sa.or_(files.c.expires_at.is_(None), files.c.expires_at > utcnow())
