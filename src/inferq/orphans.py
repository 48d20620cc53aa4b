"""Queued jobs whose message was lost with a killed worker are published again.

A worker prefetches messages before it claims their jobs. On Redis, the messages a
killed worker held come back only after the visibility timeout (many minutes), while
their jobs wait `queued`. When a pool's queues are empty yet it has jobs queued for longer
than `orphan_after_seconds`, those jobs can only be waiting in a live worker's prefetch
buffer (about to be claimed) or lost: publishing them again is safe either way, since the
conditional claim drops the extra message. AMQP brokers return a dead consumer's
messages by themselves, so this runs on Redis only.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from celery import Celery
from kombu.exceptions import ChannelError

from inferq.config import Settings
from inferq.db.tables import jobs
from inferq.jobs.store import utcnow
from inferq.providers.registry import ModelRegistry
from inferq.queue import POOLS, enqueue, pool_queues

log = logging.getLogger(__name__)


class OrphanSweep:
    def __init__(
        self, engine: sa.Engine, celery: Celery, registry: ModelRegistry, settings: Settings
    ) -> None:
        self.engine = engine
        self.celery = celery
        self.registry = registry
        self.settings = settings

    def __call__(self) -> int:
        """One pass; returns how many jobs it published again."""
        if not self.settings.broker_is_redis():
            return 0
        # A pool with messages waiting has a backlog, not a loss: its queued jobs are
        # not even read (under a backlog of thousands that read was most of the sweep).
        idle = [pool for pool in POOLS if self._waiting(pool) == 0]
        if not idle:
            return 0
        cutoff = utcnow() - timedelta(seconds=self.settings.orphan_after_seconds)
        query = (
            sa.select(jobs.c.id, jobs.c.model, jobs.c.priority)
            .where(jobs.c.status == "queued", jobs.c.created_at < cutoff)
            .limit(1000)
        )
        if len(idle) < len(POOLS):
            query = query.where(self._in_pool(idle[0]))
        with self.engine.connect() as conn:
            stale = conn.execute(query).all()
        by_pool: dict[str, list[Any]] = {}
        for row in stale:
            by_pool.setdefault(self.registry.pool_of(row.model), []).append(row)
        published = 0
        for pool, rows in by_pool.items():
            if pool not in idle:
                continue
            log.warning("%d queued %s jobs have no message; publishing again", len(rows), pool)
            for row in rows:
                enqueue(self.celery, row.id, pool, row.priority)
            published += len(rows)
        return published

    def _in_pool(self, pool: str) -> sa.ColumnElement[bool]:
        """Jobs of `pool`'s models (a model no longer in the registry counts as io)."""
        local = [spec.name for spec in self.registry.specs() if spec.pool == "local"]
        if pool == "local":
            return jobs.c.model.in_(local)
        return jobs.c.model.not_in(local)

    def _waiting(self, pool: str) -> int | None:
        """Messages waiting in the pool's queues (None if the broker cannot say)."""
        try:
            # A pooled connection: a new one per pass (a channel, a ping, a Redis pool)
            # was most of the sweep's CPU at a thousand calls in flight.
            with self.celery.pool.acquire(block=True, timeout=5) as connection:
                channel = connection.default_channel
                return sum(queue_length(channel, name) for name in pool_queues(pool))
        except Exception as exc:
            log.warning("could not size the queues: %s", exc)
            return None


def queue_length(channel: Any, queue: str) -> int:
    """Messages waiting in `queue` (0 when it does not exist)."""
    try:
        return int(channel.queue_declare(queue=queue, passive=True)[1])
    except ChannelError:
        return 0  # on Redis an empty queue has no key, which reads as "no such queue"
