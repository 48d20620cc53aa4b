"""The service's state read from where it lives: the broker, Redis and the job store.

Shared by the API's scrape-time collectors and `inferq top`, so both say the same.
Every read is cheap: one pipeline of LLENs (on AMQP, a passive declare per queue), a
SCAN of the workers' alive keys, and GROUP BYs that the status and finished_at indexes
serve.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

import redis.asyncio as aioredis
import sqlalchemy as sa
from celery import Celery
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq import redis_keys
from inferq.config import PRIORITIES, Settings
from inferq.db.tables import jobs
from inferq.jobs.store import utcnow
from inferq.queue import POOLS, queue_name
from inferq.redis_clients import async_client

log = logging.getLogger(__name__)

LIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class QueueDepth:
    pool: str
    priority: str
    depth: int


_QUEUES = [(pool, p) for pool in POOLS for p in PRIORITIES]


async def queue_depths(
    settings: Settings,
    redis: aioredis.Redis,
    celery: Celery,
    broker: aioredis.Redis | None = None,
) -> list[QueueDepth]:
    """Messages waiting in each queue of the broker, whichever it is. `broker` is a
    client of a Redis broker (the API's publisher has one); without it, a broker Redis
    apart from the service's is read through a short-lived client (`inferq top`)."""
    if not settings.broker_is_redis():
        return await asyncio.to_thread(_amqp_depths, celery)
    if broker is not None or settings.resolved_broker_url == settings.resolved_redis_url:
        return await _redis_depths(broker or redis)
    broker = async_client(settings.resolved_broker_url, socket_connect_timeout=1)
    try:
        return await _redis_depths(broker)
    except RedisError as exc:
        log.warning("broker queue depths not read: %s", exc)
        return []
    finally:
        await broker.aclose()


async def _redis_depths(redis: aioredis.Redis) -> list[QueueDepth]:
    # The lists kombu's Redis transport reads; one round trip.
    async with redis.pipeline(transaction=False) as pipe:
        for pool, priority in _QUEUES:
            pipe.llen(queue_name(pool, priority))
        lengths = await pipe.execute()
    return [QueueDepth(pool, p, int(n)) for (pool, p), n in zip(_QUEUES, lengths, strict=True)]


def _amqp_depths(celery: Celery) -> list[QueueDepth]:
    """A passive declare per queue (it reports the ready messages without creating the
    queue). A broker that cannot be reached gives no figures rather than an error: the
    rest of the scrape still counts."""
    depths = []
    conn = celery.connection_for_read()
    try:
        with conn:
            channel = conn.channel()
            for pool, priority in _QUEUES:
                try:
                    declared = channel.queue_declare(queue_name(pool, priority), passive=True)
                    depth = int(declared.message_count)
                except conn.channel_errors:
                    depth = 0  # not declared yet: nothing was ever published to it
                    channel = conn.channel()  # the broker closes a channel on that error
                depths.append(QueueDepth(pool, priority, depth))
            channel.close()
    except (OSError, *conn.connection_errors) as exc:
        log.warning("broker queue depths not read: %s", exc)
        return []
    return depths


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
