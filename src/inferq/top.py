"""`inferq top`: the service at a glance, read from the same sources as /metrics.

Queue depth from the broker, workers alive and breakers from Redis, queued and running
jobs and the last minute's outcomes from the job store, the last hour's tokens and cost
per model from the job rows (as `GET /v1/usage` sums them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.config import Settings
from inferq.db.engine import create_async
from inferq.jobs.store import utcnow
from inferq.jobs.usage import UsageRow, usage
from inferq.observability import snapshot
from inferq.queue import make_celery
from inferq.redis_clients import async_client
from inferq.resilience.breaker import all_states

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Snapshot:
    depths: list[snapshot.QueueDepth]
    workers: int
    live: list[tuple[str, str, int]]
    recent: dict[str, int]
    breakers: list[dict[str, Any]]
    hour: list[UsageRow]

    @property
    def throughput(self) -> float:
        """Jobs finished per second over the window."""
        return sum(self.recent.values()) / WINDOW_SECONDS

    @property
    def error_rate(self) -> float:
        done = sum(self.recent.values())
        return self.recent.get("failed", 0) / done if done else 0.0


async def read(
    settings: Settings, redis: aioredis.Redis, engine: AsyncEngine, celery: Celery
) -> Snapshot:
    now = utcnow()
    return Snapshot(
        depths=await snapshot.queue_depths(settings, redis, celery),
        workers=await snapshot.workers_alive(redis),
        live=await snapshot.live_jobs(engine),
        recent=await snapshot.recent_outcomes(engine, WINDOW_SECONDS),
        breakers=await all_states(redis),
        hour=await usage(engine, None, now - timedelta(hours=1), now, "model"),
    )


def render(s: Snapshot) -> Group:
    """The snapshot as rich tables."""
    queues = Table("queue", "depth", title="Queues (broker)", title_justify="left")
    for d in s.depths:
        queues.add_row(f"{d.pool}.{d.priority}", str(d.depth))
    jobs = Table("state", "model", "jobs", title="Jobs now", title_justify="left")
    for state, model, count in sorted(s.live):
        jobs.add_row(state, model, str(count))
    rate = Table("workers alive", "finished/s (1 min)", "error rate (1 min)", "breakers open")
    opened = [b["endpoint"] for b in s.breakers if b["state"] != "closed"]
    rate.add_row(
        str(s.workers), f"{s.throughput:.2f}", f"{s.error_rate:.1%}", ", ".join(opened) or "-"
    )
    cost = Table(
        "model",
        "jobs",
        "tokens in",
        "tokens out",
        "cost (USD)",
        title="Last hour, by serving model",
        title_justify="left",
    )
    for row in s.hour:
        cost.add_row(
            row.group,
            str(row.jobs),
            str(row.prompt_tokens),
            str(row.completion_tokens),
            f"{row.cost_usd:.6f}",
        )
    return Group(rate, queues, jobs, cost)


def run_top(settings: Settings, console: Console, interval: float, once: bool) -> None:
    asyncio.run(_run(settings, console, interval, once))


async def _run(settings: Settings, console: Console, interval: float, once: bool) -> None:
    redis = async_client(settings.resolved_redis_url, socket_connect_timeout=2)
    engine = create_async(settings.resolved_database_url)
    celery = make_celery(settings, pool_connections=1)
    try:
        if once:
            console.print(render(await read(settings, redis, engine, celery)))
            return
        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(render(await read(settings, redis, engine, celery)), refresh=True)
                await asyncio.sleep(interval)
    finally:
        await redis.aclose()
        await engine.dispose()
