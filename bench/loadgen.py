"""Load generators: an open loop at a fixed arrival rate, and a closed loop of N clients.

Open loop: request i is due at `i / rate` seconds after the start and is sent then
whatever happened to the earlier ones; its latency counts from that intended send time,
so a stalled server shows up as latency instead of hiding it (no coordinated omission).
Both loops are bounded in count and in time, and talk to loopback addresses only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson

LOOPBACK_PREFIXES = ("http://127.", "http://localhost")
T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed (cheaper per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@dataclass(frozen=True)
class Target:
    """One HTTP call to make, over and over."""

    url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    stream: bool = False
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(LOOPBACK_PREFIXES):
            raise ValueError(f"load is only sent to loopback addresses, not {self.url}")


@dataclass
class Sample:
    """One request: times in seconds from the run's start."""

    intended: float
    sent: float = 0.0
    first_token: float | None = None
    done: float | None = None
    status: int = 0
    error: str | None = None
    warmup: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.done is not None

    @property
    def latency(self) -> float | None:
        return None if self.done is None else self.done - self.intended

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.intended


def _has_text(line: bytes) -> bool:
    """Whether an SSE `data:` line of an OpenAI stream carries generated text."""
    data = line[5:].strip()
    if not data or data == b"[DONE]":
        return False
    try:
        choice = orjson.loads(data)["choices"][0]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return False
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or choice.get("text"))


async def _read_stream(
    resp: aiohttp.ClientResponse, sample: Sample, clock: Callable[[], float]
) -> None:
    buffer = b""
    finished = False
    async for piece in resp.content.iter_any():
        buffer += piece
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            if sample.first_token is None and _has_text(line):
                sample.first_token = clock()
            if line[5:].strip() == b"[DONE]":
                finished = True
    if not finished:
        sample.error = "stream ended without [DONE]"
    elif sample.first_token is None:
        # An answer with no text has no time to its first token: a failure, not a sample.
        sample.error = "stream had no text"


async def call(
    session: aiohttp.ClientSession, target: Target, sample: Sample, clock: Callable[[], float]
) -> bytes:
    """Make the call, filling `sample`; returns the body of a non-stream answer."""
    sample.sent = clock()
    body = b""
    try:
        async with session.request(
            target.method,
            target.url,
            data=target.body,
            headers=target.headers,
            timeout=aiohttp.ClientTimeout(total=target.timeout),
        ) as resp:
            sample.status = resp.status
            if resp.status >= 400:
                sample.error = f"HTTP {resp.status}"
                await resp.read()
            elif target.stream:
                await _read_stream(resp, sample, clock)
            else:
                body = await resp.read()
                sample.first_token = clock()
    except (TimeoutError, aiohttp.ClientError) as exc:
        sample.error = type(exc).__name__
    sample.done = clock()
    if sample.error:
        sample.done = None
    return body


def new_session(limit: int = 0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, force_close=False, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, headers={"content-type": "application/json"})


@dataclass
class OpenLoopResult:
    samples: list[Sample]
    in_flight: list[tuple[float, int]]
    wall_seconds: float


async def open_loop(
    target: Target, rate: float, seconds: float, warmup_seconds: float = 0.0
) -> OpenLoopResult:
    """Send at `rate` per second for warm-up + `seconds`; warm-up samples are flagged."""
    total = int((seconds + warmup_seconds) * rate)
    samples = [
        Sample(intended=i / rate, warmup=i / rate < warmup_seconds) for i in range(total)
    ]
    in_flight: list[tuple[float, int]] = []
    active = 0
    start = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - start

    async def one(sample: Sample) -> None:
        nonlocal active
        active += 1
        try:
            await call(session, target, sample, clock)
        finally:
            active -= 1

    async def watch() -> None:
        while True:
            in_flight.append((clock(), active))
            await asyncio.sleep(0.1)

    async with new_session() as session:
        watcher = asyncio.create_task(watch())
        tasks = []
        for sample in samples:
            delay = sample.intended - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(sample)))
        await asyncio.wait(tasks, timeout=target.timeout + 5)
        watcher.cancel()
    for task in tasks:
        task.cancel()
    return OpenLoopResult(samples, in_flight, clock())


async def closed_loop(
    target: Target, clients: int, seconds: float, max_requests: int = 1_000_000
) -> tuple[list[Sample], float]:
    """`clients` callers each sending the next request when the last one answers."""
    samples: list[Sample] = []
    start = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - start

    async def client() -> None:
        while clock() < seconds and len(samples) < max_requests:
            sample = Sample(intended=clock())
            samples.append(sample)
            await call(session, target, sample, clock)

    async with new_session(limit=clients) as session:
        await asyncio.gather(*(client() for _ in range(clients)))
    return samples, clock()


__all__ = [
    "OpenLoopResult",
    "Sample",
    "Target",
    "call",
    "closed_loop",
    "new_session",
    "open_loop",
    "run_async",
]
