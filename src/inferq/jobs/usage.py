"""Usage and cost over time, summed from the job rows at read time.

Nothing is written per request or per token for this: each finished job's row already
holds its tokens and cost, and the `(key_id, finished_at)` index serves the sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.db.tables import jobs

GroupBy = Literal["model", "day"]


@dataclass(frozen=True)
class UsageRow:
    group: str
    jobs: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def _group_column(group_by: GroupBy) -> sa.ColumnElement[str]:
    if group_by == "model":
        # What was charged is the model that served (a fallback may have).
        return sa.func.coalesce(jobs.c.served_model, jobs.c.model)
    # date() is the day in UTC on SQLite (stored UTC) and on PostgreSQL in UTC sessions.
    return sa.cast(sa.func.date(jobs.c.finished_at), sa.String)


async def usage(
    engine: AsyncEngine,
    key_id: str | None,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
) -> list[UsageRow]:
    """Finished jobs in [start, end) grouped by model or by day; every key's if None."""
    group = _group_column(group_by).label("grp")
    query = (
        sa.select(
            group,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(jobs.c.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(jobs.c.completion_tokens), 0),
            sa.func.coalesce(sa.func.sum(jobs.c.cost_usd), 0.0),
        )
        .where(jobs.c.finished_at >= start, jobs.c.finished_at < end)
        .group_by(group)
        .order_by(group)
    )
    if key_id is not None:
        query = query.where(jobs.c.key_id == key_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [UsageRow(_text(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows]


def _text(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)
