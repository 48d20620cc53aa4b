"""The service's state read from where it lives: the broker, Redis and the job store.

Shared by the API's scrape-time collectors and `inferq top`, so both say the same.
Every read is cheap: one pipeline of LLENs, a SCAN of the workers' alive keys, and
GROUP BYs that the status and finished_at indexes serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq import redis_keys
from inferq.config import PRIORITIES
from inferq.db.tables import jobs
from inferq.jobs.store import utcnow
from inferq.queue import POOLS, queue_name

LIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class QueueDepth:
    pool: str
    priority: str
    depth: int


async def queue_depths(redis: aioredis.Redis) -> list[QueueDepth]:
    """Messages waiting in each queue (a Redis broker's lists; one round trip)."""
    names = [(pool, p) for pool in POOLS for p in PRIORITIES]
    async with redis.pipeline(transaction=False) as pipe:
        for pool, priority in names:
            pipe.llen(queue_name(pool, priority))
        lengths = await pipe.execute()
    return [QueueDepth(pool, p, int(n)) for (pool, p), n in zip(names, lengths, strict=True)]


async def workers_alive(redis: aioredis.Redis) -> int:
    count = 0
    async for _ in redis.scan_iter(match=redis_keys.worker_alive("*"), count=500):
        count += 1
    return count


async def live_jobs(engine: AsyncEngine) -> list[tuple[str, str, int]]:
    """(state, model, count) of queued and running jobs."""
    query = (
        sa.select(jobs.c.status, jobs.c.model, sa.func.count())
        .where(jobs.c.status.in_(LIVE_STATES))
        .group_by(jobs.c.status, jobs.c.model)
    )
    async with engine.connect() as conn:
        return [(r[0], r[1], int(r[2])) for r in await conn.execute(query)]


async def recent_outcomes(engine: AsyncEngine, seconds: float) -> dict[str, int]:
    """Jobs that ended in the last `seconds`, by terminal state."""
    since = utcnow() - timedelta(seconds=seconds)
    query = (
        sa.select(jobs.c.status, sa.func.count())
        .where(jobs.c.finished_at >= since)
        .group_by(jobs.c.status)
    )
    async with engine.connect() as conn:
        return {r[0]: int(r[1]) for r in await conn.execute(query)}
