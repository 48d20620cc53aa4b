"""Redis connections, ours and kombu's, do not look redis-py's version up each."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.utils

from inferq.config import Settings
from inferq.queue import make_celery
from inferq.redis_clients import async_client, driver_info, sync_client


@pytest.fixture
def url(redis_url: str) -> str:
    return redis_url


@pytest.fixture
def lookups(url: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each lookup of redis-py's version from the package metadata."""
    seen: list[str] = []
    real = redis.utils.get_lib_version

    def counted() -> str:
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(redis.utils, "get_lib_version", counted)
    driver_info.cache_clear()
    return seen


def test_many_connections_one_version_lookup_and_redis_still_told_it(
    url: str, lookups: list[str]
) -> None:
    client = sync_client(url, max_connections=64)
    held = [client.connection_pool.get_connection() for _ in range(20)]
    for connection in held:
        client.connection_pool.release(connection)

    async def open_async() -> None:
        aclient = async_client(url, max_connections=64)
        # redis-py's asyncio ConnectionPool.get_connection is unannotated.
        held = [await aclient.connection_pool.get_connection() for _ in range(10)]  # type: ignore[no-untyped-call]
        for connection in held:
            await aclient.connection_pool.release(connection)
        await aclient.aclose()

    asyncio.run(open_async())
    celery = make_celery(Settings(redis_url=url))
    with celery.connection_for_write() as connection:
        connection.default_channel.client.ping()  # kombu's own pool, our transport
    celery.close()

    assert len(lookups) == 1
    # The one lookup's answer is what every connection tells a server new enough to ask.
    assert all(c.driver_info is driver_info() for c in held)
    assert driver_info().lib_version == lookups[0] == redis.__version__
    client.close()
