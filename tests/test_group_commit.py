"""Concurrent writes go out together; one bad item fails only its own caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from inferq.db.engine import create_async
from inferq.db.migrate import upgrade
from inferq.db.tables import api_keys, jobs
from inferq.group_commit import GroupCommit
from inferq.jobs.schemas import Job
from inferq.jobs.store import JobStore, NewJob, utcnow
from tests.conftest import drop_postgres, fresh_postgres, postgres_url


def _job(job_id: str | None = None) -> NewJob:
    ids: dict[str, Any] = {"id": job_id} if job_id else {}
    return NewJob(key_id="k", model="sim", priority="normal", payload={"prompt": "ünïcode"}, **ids)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    """SQLite, and PostgreSQL when INFERQ_TEST_DATABASE_URL names one (asyncpg's path)."""
    if request.param == "sqlite":
        yield database_url
        return
    admin = postgres_url()
    if admin is None:
        pytest.skip("INFERQ_TEST_DATABASE_URL is not set")
    url, name = fresh_postgres(admin)
    try:
        upgrade(url)
        yield url
    finally:
        drop_postgres(admin, name)


def test_concurrent_inserts_share_statements_and_a_duplicate_fails_alone(
    store_url: str,
) -> None:
    database_url = store_url

    async def scenario() -> tuple[list[Job | BaseException], list[int], set[str]]:
        engine = create_async(database_url)
        async with engine.begin() as conn:
            key = {"id": "k", "name": "k", "prefix": "k", "key_hash": "k", "created_at": utcnow()}
            await conn.execute(api_keys.insert(), key)
        store = JobStore(engine)
        first = _job()
        await store.insert(first)
        sizes: list[int] = []
        write = store._rows._write

        async def counted(rows: list[dict[str, object]]) -> None:
            sizes.append(len(rows))
            await write(rows)

        store._rows._write = counted
        batch = [_job() for _ in range(20)]
        outcomes = await asyncio.gather(
            *(store.insert(n) for n in [*batch[:10], _job(first.id), *batch[10:]]),
            return_exceptions=True,
        )
        async with engine.connect() as conn:
            ids = set((await conn.execute(sa.select(jobs.c.id))).scalars())
            payload = (
                await conn.execute(sa.select(jobs.c.request).where(jobs.c.id == batch[0].id))
            ).scalar_one()
        await engine.dispose()
        assert payload["prompt"] == "ünïcode"
        return outcomes, sizes, ids - {first.id} - {n.id for n in batch}

    outcomes, sizes, strays = asyncio.run(scenario())
    assert isinstance(outcomes[10], sa.exc.IntegrityError)
    assert not any(isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 10)
    assert sizes[0] == 21  # all together first; refused, so each row then went alone
    assert sorted(sizes[1:]) == [1] * 21
    assert strays == set()


def test_a_lone_write_goes_at_once_and_an_outage_fails_every_waiter_at_once() -> None:
    async def scenario() -> tuple[list[list[int]], list[BaseException | None]]:
        batches: list[list[int]] = []
        gate = asyncio.Event()

        async def write(items: list[int]) -> None:
            batches.append(items)
            if items[0] == 0:
                await gate.wait()  # the first write is under way while the rest arrive
            if 99 in items:
                raise ConnectionError("server gone")

        group: GroupCommit[int] = GroupCommit(write, isolate=(ValueError,))
        first = asyncio.create_task(group.write(0))
        for _ in range(2):  # the caller's task, then the writer's: nothing waits for company
            await asyncio.sleep(0)
        assert batches == [[0]]
        rest = [asyncio.create_task(group.write(i)) for i in (1, 2, 99)]
        await asyncio.sleep(0)
        gate.set()
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        return batches, outcomes

    batches, outcomes = asyncio.run(scenario())
    assert batches == [[0], [1, 2, 99]]  # an outage is not retried item by item
    assert outcomes[0] is None
    assert all(isinstance(o, ConnectionError) for o in outcomes[1:])


@pytest.mark.parametrize("waiters", [1, 3])
def test_a_cancelled_drain_leaves_no_waiter_hanging(waiters: int) -> None:
    async def scenario() -> list[object]:
        async def write(items: list[int]) -> None:
            await asyncio.sleep(30)

        group: GroupCommit[int] = GroupCommit(write)
        tasks = [asyncio.create_task(group.write(i)) for i in range(waiters)]
        await asyncio.sleep(0.01)
        assert group._drain is not None
        group._drain.cancel()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
