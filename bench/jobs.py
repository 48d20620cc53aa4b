"""Submitting bursts of jobs to inferq and watching them end, from its job table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from bench.loadgen import Sample, Target, call, new_session

TERMINAL = ("succeeded", "failed", "cancelled")
RETRY_STATUSES = (429, 503)


@dataclass
class Burst:
    """How a burst went in: per-request samples and the wall time from first to last."""

    samples: list[Sample]
    seconds: float
    retries: int


async def submit_burst(
    url: str, headers: dict[str, str], body: Callable[[int], bytes], count: int, clients: int,
    deadline_seconds: float = 600.0,
) -> Burst:
    """POST `count` bodies with `clients` concurrent callers, as fast as they are admitted
    (a 429 or 503 is retried after a short pause)."""
    samples: list[Sample] = []
    retries = 0
    next_index = 0
    start = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - start

    async def client() -> None:
        nonlocal next_index, retries
        while next_index < count and clock() < deadline_seconds:
            index, next_index = next_index, next_index + 1
            target = Target(url, body(index), headers)
            while clock() < deadline_seconds:
                sample = Sample(intended=clock())
                await call(session, target, sample, clock)
                if sample.status not in RETRY_STATUSES:
                    samples.append(sample)
                    break
                retries += 1
                await asyncio.sleep(0.05)

    async with new_session(limit=clients) as session:
        await asyncio.gather(*(client() for _ in range(clients)))
    return Burst(samples, clock(), retries)


class JobTable:
    """Read-only queries on inferq's `jobs` table (any database inferq supports)."""

    def __init__(self, database_url: str) -> None:
        from inferq.db.engine import sync_url

        self.engine = sa.create_engine(sync_url(database_url))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT status, count(*) FROM jobs GROUP BY status"))
            return {str(status): int(n) for status, n in rows}

    def running(self) -> int:
        return self.counts().get("running", 0)

    def wait_terminal(self, count: int, timeout: float,
                      tick: Callable[[dict[str, int]], None] | None = None) -> dict[str, int]:
        """Poll until `count` jobs are terminal (or `timeout`); returns the last counts."""
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            counts = self.counts()
            if tick:
                tick(counts)
            if sum(counts.get(s, 0) for s in TERMINAL) >= count:
                break
            time.sleep(0.25)
        return counts

    def timelines(self) -> list[tuple[datetime, datetime | None, datetime | None]]:
        """(created, started, finished) of every job."""
        table = sa.table(
            "jobs", sa.column("created_at"), sa.column("started_at"), sa.column("finished_at")
        )
        query = sa.select(table.c.created_at, table.c.started_at, table.c.finished_at)
        with self.engine.connect() as conn:
            return [(_dt(a), _opt(b), _opt(c)) for a, b, c in conn.execute(query)]

    def claims_histogram(self) -> dict[int, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT claims, count(*) FROM jobs GROUP BY claims"))
            return {int(c): int(n) for c, n in rows}

    def close(self) -> None:
        self.engine.dispose()


def _dt(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _opt(value: object) -> datetime | None:
    return None if value is None else _dt(value)


def peak_concurrency(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at once (a sweep over starts and ends)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def per_second(times: list[float], origin: float) -> list[int]:
    """How many of `times` fall in each whole second after `origin`."""
    if not times:
        return []
    buckets = [0] * (int(max(times) - origin) + 1)
    for t in times:
        buckets[max(0, int(t - origin))] += 1
    return buckets


__all__ = ["Burst", "JobTable", "peak_concurrency", "per_second", "submit_burst"]
