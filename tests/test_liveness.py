"""A worker sees every cancellation, and reads cancel flags only when one was set."""

from __future__ import annotations

from typing import Any

import redis

from inferq.liveness import Liveness, request_stops


class CountingClient:
    """A real Redis client that counts the MGETs sent through it."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.mgets: list[int] = []

    def mget(self, keys: list[str]) -> Any:
        self.mgets.append(len(keys))
        return self.client.mget(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def stop(client: redis.Redis, *job_ids: str) -> None:
    pipe = client.pipeline(transaction=False)
    request_stops(pipe, job_ids, ttl_seconds=60)
    pipe.execute()


def test_cancellations_are_seen_and_quiet_polls_read_no_flags(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    counting = CountingClient(client)
    liveness = Liveness(counting, "w-1", ttl_seconds=10, heartbeat_seconds=1)  # type: ignore[arg-type]
    signals = {f"job-{i}": liveness.track(f"job-{i}") for i in range(500)}

    liveness.poll_cancels()  # new jobs: their flags are read once
    assert counting.mgets == [500]
    for _ in range(3):
        liveness.poll_cancels()  # nothing was cancelled: no flag is read
    assert counting.mgets == [500]

    stop(client, "job-7")
    liveness.poll_cancels()
    assert signals["job-7"].is_set() and signals["job-7"].reason == "cancelled"
    assert not any(s.is_set() for job_id, s in signals.items() if job_id != "job-7")

    # A job whose stop was asked before its worker tracked it (the flag and the bump
    # are already old news when the job arrives) is stopped at the next poll.
    stop(client, "late")
    liveness.poll_cancels()
    late = liveness.track("late")
    liveness.poll_cancels()
    assert late.is_set() and late.reason == "cancelled"
    assert counting.mgets[-1] == 1  # only the new job's flag was read
