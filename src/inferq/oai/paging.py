"""OpenAI's list pages: newest first by default, `after` names the last object seen."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferq.errors import InvalidRequest


async def after_clause(
    conn: AsyncConnection, table: sa.Table, key_id: str, after: str, descending: bool
) -> sa.ColumnElement[bool]:
    """Rows past the object `after` in (created_at, id) order.

    Ids are random, so the position is the named object's creation time, with its id
    breaking ties between objects created in the same instant.
    """
    query = sa.select(table.c.created_at).where(table.c.id == after, table.c.key_id == key_id)
    row = (await conn.execute(query)).first()
    if row is None:
        raise InvalidRequest(f"`after` names no object of yours: {after!r}")
    created, c = row.created_at, table.c
    if descending:
        return sa.or_(c.created_at < created, sa.and_(c.created_at == created, c.id < after))
    return sa.or_(c.created_at > created, sa.and_(c.created_at == created, c.id > after))


def order_by(table: sa.Table, descending: bool) -> tuple[sa.ColumnElement[Any], ...]:
    if descending:
        return table.c.created_at.desc(), table.c.id.desc()
    return table.c.created_at.asc(), table.c.id.asc()


def list_object(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """The page of at most `limit` objects from `rows` (fetched with one extra)."""
    data = rows[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(rows) > limit,
    }


def unix(moment: Any) -> int | None:
    """A datetime as OpenAI's unix seconds (None stays None)."""
    return int(moment.timestamp()) if moment is not None else None
