"""The admission script's token window, against a real Redis: reservations that leave
the window take their tokens with them, zero-token ones included."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from inferq.admission import Admission


def test_tokens_leave_the_window_and_zero_reservations_expire_cleanly(
    redis_url: str,
) -> None:
    async def scenario() -> list[tuple[bool, int]]:
        client = aioredis.Redis.from_url(redis_url)
        admission = Admission(client, window_ms=300)
        seen = []
        for job, reserve in (("a", 60), ("b", 0), ("c", 40)):
            d = await admission.admit(
                "key", job, rpm=None, tpm=100, max_active=None, reserve_tokens=reserve
            )
            seen.append((d.admitted, reserve))
        await admission.release("key", "a", tokens_used=0)  # settled to 0 tokens
        full = await admission.admit(
            "key", "d", rpm=None, tpm=100, max_active=None, reserve_tokens=70
        )
        seen.append((full.admitted, 70))  # 0 + 0 + 40 + 70 > 100
        await asyncio.sleep(0.35)  # every reservation leaves the window
        later = await admission.admit(
            "key", "e", rpm=None, tpm=100, max_active=None, reserve_tokens=100
        )
        seen.append((later.admitted, 100))
        await client.aclose()
        return seen

    assert asyncio.run(scenario()) == [
        (True, 60),
        (True, 0),
        (True, 40),
        (False, 70),
        (True, 100),
    ]
