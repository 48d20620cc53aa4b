"""Queued jobs whose message was lost are published again, pool by pool."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import redis
import sqlalchemy as sa

from inferq.config import Settings
from inferq.db.engine import sync_url
from inferq.db.migrate import upgrade
from inferq.db.tables import api_keys, jobs
from inferq.jobs.store import utcnow
from inferq.orphans import OrphanSweep
from inferq.providers.registry import ModelRegistry
from inferq.queue import make_celery, queue_name

TESTS = Path(__file__).parent


def test_lost_jobs_are_published_again_only_in_pools_without_a_backlog(
    database_url: str, redis_url: str
) -> None:
    upgrade(database_url)
    settings = Settings(redis_url=redis_url, database_url=database_url)
    engine = sa.create_engine(sync_url(database_url))
    long_ago = utcnow() - timedelta(minutes=5)
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert(),
            {"id": "k", "name": "k", "prefix": "k", "key_hash": "k", "created_at": long_ago},
        )
        for job_id, model in (("lost-io", "sim"), ("lost-local", "gemma-3-270m")):
            conn.execute(
                jobs.insert(),
                {"id": job_id, "key_id": "k", "model": model, "priority": "normal",
                 "status": "queued", "request": {}, "metadata": {}, "created_at": long_ago},
            )  # fmt: skip
    registry = ModelRegistry.load(TESTS / "models.yaml")
    sweep = OrphanSweep(engine, make_celery(settings), registry, settings)
    broker = redis.Redis.from_url(settings.resolved_broker_url)
    io, local = queue_name("io", "normal"), queue_name("local", "normal")

    # The io pool has messages waiting: its queued jobs are a backlog, not a loss.
    broker.lpush(io, b"a message a worker will take")
    assert sweep() == 1
    assert broker.llen(local) == 1 and broker.llen(io) == 1

    broker.delete(io)
    assert sweep() == 1  # now the io job; the local one has its message again
    assert broker.llen(io) == 1 and broker.llen(local) == 1

    # Later passes reuse the broker connections of the first: no connection per pass.
    before = _client_ids(broker)
    for _ in range(3):
        sweep()
    assert _client_ids(broker) == before
    engine.dispose()


def _client_ids(client: redis.Redis) -> set[int]:
    """Ids of the connections open on the client's database."""
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return {int(c["id"]) for c in client.client_list() if int(c["db"]) == db}
