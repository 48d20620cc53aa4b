"""Per-job Redis Streams: the worker appends events, the SSE endpoint reads and resumes.

Entries carry two fields, `event` (delta | reset | done | error) and `data` (JSON).
Stream ids double as SSE event ids, so `Last-Event-ID` resumes with no gap and no
duplicate. A `reset` tells readers to drop the text of a previous, interrupted attempt.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from inferq import redis_keys
from inferq.jobs.schemas import Job

log = logging.getLogger(__name__)
TERMINAL_EVENTS = frozenset({"done", "error"})


@dataclass(frozen=True)
class StreamEvent:
    id: str
    event: str
    data: bytes


def terminal_entry(job: Job) -> dict[str, bytes]:
    """The one terminal entry: `error` for a failed job, `done` otherwise."""
    event = "error" if job.status == "failed" else "done"
    return {"event": event.encode(), "data": job.model_dump_json().encode()}


# A dropped connection is retried by redis-py on a fresh one; this covers a short outage.
_redis_retry = retry(
    retry=retry_if_exception_type(redis.ConnectionError),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.2, max=2),
    reraise=True,
)


class StreamWriter:
    """Appends one job's events (worker side, sync).

    The stream is a live view; the job row is the record. A delta that cannot be written
    (Redis unreachable for seconds) does not fail the job: the writer notes the gap, and
    before the terminal event it appends a `reset` and the whole text as one delta, so a
    reader who concatenates deltas still ends with the right answer.
    """

    def __init__(self, client: redis.Redis, job_id: str, ttl_seconds: int, maxlen: int) -> None:
        self.client = client
        self.key = redis_keys.job_stream(job_id)
        self.ttl = ttl_seconds
        self.maxlen = maxlen
        self._expiry_set = False
        self._text: list[str] = []
        self._gap = False
        self._attempt = 0

    @_redis_retry
    def _add(self, fields: dict[str, bytes]) -> None:
        if self._expiry_set:
            self.client.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.expire(self.key, self.ttl)
        pipe.execute()
        self._expiry_set = True

    def delta(self, text: str) -> None:
        self._text.append(text)
        if self._gap:
            return  # the repair before the terminal event carries it
        try:
            self._add({"event": b"delta", "data": orjson.dumps({"text": text})})
        except redis.RedisError as exc:
            log.warning("stream %s: delta not written (%s); repaired at the end", self.key, exc)
            self._gap = True

    def reset(self, attempt: int) -> None:
        self._text.clear()
        self._attempt = attempt
        try:
            self._add({"event": b"reset", "data": orjson.dumps({"attempt": attempt})})
            self._gap = False
        except redis.RedisError as exc:
            log.warning("stream %s: reset not written (%s)", self.key, exc)
            self._gap = True

    def terminal(self, job: Job) -> None:
        """Append the terminal event; the stream then lives `ttl` more seconds.

        Never raises: a reader who misses it reads the job row, which is final already.
        """
        try:
            self._terminal(job)
        except redis.RedisError as exc:
            log.warning("stream %s: terminal event not written: %s", self.key, exc)

    @_redis_retry
    def _terminal(self, job: Job) -> None:
        pipe = self.client.pipeline(transaction=False)
        if self._gap:
            reset = {"event": b"reset", "data": orjson.dumps({"attempt": self._attempt})}
            whole = {"event": b"delta", "data": orjson.dumps({"text": "".join(self._text)})}
            for fields in (reset, whole):
                pipe.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.xadd(self.key, terminal_entry(job), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.expire(self.key, self.ttl)
        pipe.execute()


async def append_terminal(client: aioredis.Redis, job: Job, ttl_seconds: int) -> None:
    """API side: end the stream of a job that never reached a worker."""
    key = redis_keys.job_stream(job.id)
    async with client.pipeline(transaction=False) as pipe:
        pipe.xadd(key, terminal_entry(job))  # type: ignore[arg-type]
        pipe.expire(key, ttl_seconds)
        await pipe.execute()


async def read_after(
    client: aioredis.Redis, job_id: str, after: str, block_ms: int, count: int = 256
) -> list[StreamEvent]:
    """Events after `after` ("0" for all), waiting up to `block_ms` for the first."""
    reply: Any = await client.xread(
        {redis_keys.job_stream(job_id): after}, count=count, block=block_ms
    )
    events: list[StreamEvent] = []
    for _key, entries in reply or []:
        for entry_id, fields in entries:
            events.append(
                StreamEvent(_text(entry_id), _text(fields[b"event"]), bytes(fields[b"data"]))
            )
    return events


async def stream_exists(client: aioredis.Redis, job_id: str) -> bool:
    return bool(await client.exists(redis_keys.job_stream(job_id)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def wait_terminal(client: aioredis.Redis, job_id: str, timeout: float) -> Job | None:
    """Block until the job's terminal event arrives; None after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    cursor = "0"
    while (left := deadline - loop.time()) > 0:
        events = await read_after(client, job_id, cursor, block_ms=max(1, int(min(left, 2) * 1000)))
        for event in events:
            cursor = event.id
            if event.event in TERMINAL_EVENTS:
                return Job.model_validate_json(event.data)
    return None
