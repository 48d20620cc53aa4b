"""What the API reads on every request (the queue depth, API keys) is kept fresh in the
background: a request waits for the database only when no value exists yet."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import sqlalchemy as sa

from inferq.admission import QueueDepth
from inferq.db.engine import create_async
from inferq.db.tables import api_keys
from inferq.keys import KeyStore


class SlowCount:
    """A count that takes `delay` seconds and can be made to fail."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.value = 0
        self.calls = 0
        self.failing = False

    async def __call__(self) -> int:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.failing:
            raise ConnectionError("store down")
        return self.value


def test_queue_depth_is_reread_in_the_background_and_never_awaited_after_the_first() -> None:
    async def scenario() -> None:
        count = SlowCount(delay=0.2)
        depth = QueueDepth(count, ttl=0.3)
        # The first requests share one read and wait for it.
        started = time.monotonic()
        # gather answers a list (typeshed types a gather of three as a tuple).
        reads = cast(list[int], await asyncio.gather(depth.get(), depth.get(), depth.get()))
        assert reads == [0, 0, 0]
        assert time.monotonic() - started >= 0.2
        assert count.calls == 1
        count.value = 7
        # Later requests answer at once with the last value, stale or not...
        for _ in range(10):
            started = time.monotonic()
            await depth.get()
            assert time.monotonic() - started < 0.05
            await asyncio.sleep(0.1)
        # ...which the background read has brought up to date.
        assert await depth.get() == 7
        # A store outage keeps the last value rather than failing requests.
        count.failing = True
        count.value = 9
        await asyncio.sleep(1.2)
        assert await depth.get() == 7
        count.failing = False
        await asyncio.sleep(1.2)
        assert await depth.get() == 9
        await depth.close()
        calls = count.calls
        await asyncio.sleep(0.7)
        assert count.calls == calls  # closed: no more reads

    asyncio.run(scenario())


def test_queue_depth_first_read_failure_reaches_the_request_and_is_retried() -> None:
    async def scenario() -> None:
        count = SlowCount(delay=0)
        count.failing = True
        depth = QueueDepth(count, ttl=0.1)
        try:
            await depth.get()
        except ConnectionError:
            pass
        else:
            raise AssertionError("the first read's failure must reach the request (503)")
        count.failing = False
        count.value = 3
        assert await depth.get() == 3
        await depth.close()

    asyncio.run(scenario())


def test_busy_key_is_reread_before_expiry_and_a_revocation_still_lands_in_time(
    database_url: str,
) -> None:
    async def scenario() -> None:
        engine = create_async(database_url)
        keys = KeyStore(engine, cache_seconds=1.0)
        try:
            _, key = await keys.create("busy")
            caller = await keys.authenticate(key)
            assert caller is not None
            # Revoked behind the cache's back (another API process did it).
            async with engine.begin() as conn:
                await conn.execute(
                    sa.update(api_keys).values(revoked_at=sa.func.current_timestamp())
                )
            # Within the first half of its life the entry is served as it is.
            assert await keys.authenticate(key) == caller
            await asyncio.sleep(0.6)
            # Past half its life: still served (not expired) while it is read again...
            assert await keys.authenticate(key) == caller
            await asyncio.sleep(0.2)
            # ...and the background read has replaced it before it would have expired.
            assert await keys.authenticate(key) is None
        finally:
            await keys.close()
            await engine.dispose()

    asyncio.run(scenario())


def test_cached_key_is_never_served_past_its_expiry(database_url: str) -> None:
    async def scenario() -> None:
        engine = create_async(database_url)
        keys = KeyStore(engine, cache_seconds=0.3)
        try:
            _, key = await keys.create("idle")
            assert await keys.authenticate(key) is not None
            async with engine.begin() as conn:
                await conn.execute(
                    sa.update(api_keys).values(revoked_at=sa.func.current_timestamp())
                )
            await asyncio.sleep(0.35)  # no request in between: no refresh ran
            assert await keys.authenticate(key) is None
        finally:
            await keys.close()
            await engine.dispose()

    asyncio.run(scenario())
