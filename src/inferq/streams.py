"""Per-job Redis Streams: the worker appends events, the SSE endpoint reads and resumes.

Entries carry two fields, `event` (delta | reset | done | error) and `data` (JSON).
Stream ids double as SSE event ids, so `Last-Event-ID` resumes with no gap and no
duplicate. A `reset` tells readers to drop the text of a previous, interrupted attempt.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec

import orjson
import redis
import redis.asyncio as aioredis
from redis.client import Pipeline

from inferq import redis_keys
from inferq.failure_log import FailureLog
from inferq.jobs.schemas import Job

log = logging.getLogger(__name__)
P = ParamSpec("P")
TERMINAL_EVENTS = frozenset({"done", "error"})
# Jobs running in a worker process at or below which its stream entries may skip the sink.
INLINE_JOBS = 16


@dataclass(frozen=True)
class StreamEvent:
    id: str
    event: str
    data: bytes


def terminal_entry(job: Job) -> dict[str, bytes]:
    """The one terminal entry: `error` for a failed job, `done` otherwise."""
    event = "error" if job.status == "failed" else "done"
    return {"event": event.encode(), "data": job.model_dump_json().encode()}


def _redis_retry(write: Callable[P, None]) -> Callable[P, None]:
    """Try a write up to four times over about a second and a half when Redis drops the
    connection or it went silent (a timed-out connection is replaced). A plain loop:
    tenacity's per-call bookkeeping showed in profiles at one call per delta."""

    @functools.wraps(write)
    def retried(*args: P.args, **kwargs: P.kwargs) -> None:
        for pause in (0.2, 0.4, 0.8):
            try:
                return write(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(pause)
        return write(*args, **kwargs)

    return retried


class StreamWriter:
    """Appends one job's events (worker side, sync).

    Deltas that arrive within `coalesce_seconds` of the last write are held and sent as
    one entry with the next write: a provider that emits tokens a millisecond apart costs
    one Redis round trip per few milliseconds, not one per token (at a thousand jobs in
    flight that was most of a worker's CPU). The first delta is always sent at once.

    The stream is a live view; the job row is the record. A delta that cannot be written
    (Redis unreachable for seconds) does not fail the job: the writer notes the gap, and
    before the terminal event it appends a `reset` and the whole text as one delta, so a
    reader who concatenates deltas still ends with the right answer.

    A writer that is not `live` (nobody reads the job's text as it comes: a non-stream
    completion waits for the whole answer) writes the terminal event only; the job row
    and the terminal event carry the text.

    With a `sink`, deltas and resets go out through the process's `StreamSink`; the
    terminal event waits for them and is then written from the job's own thread.
    """

    def __init__(
        self,
        client: redis.Redis,
        job_id: str,
        ttl_seconds: int,
        maxlen: int,
        coalesce_seconds: float = 0.005,
        live: bool = True,
        sink: StreamSink | None = None,
    ) -> None:
        self.client = client
        self.live = live
        self.sink = sink
        self.unwritten = 0  # entries handed to the sink and not yet written (or failed)
        self.key = redis_keys.job_stream(job_id)
        self.ttl = ttl_seconds
        self.maxlen = maxlen
        self.coalesce_seconds = coalesce_seconds
        self._expiry_set = False
        self._text: list[str] = []
        self._pending: list[str] = []
        self._last_write = float("-inf")
        self._gap = False
        self._attempt = 0

    def _add(self, fields: dict[str, bytes], clears_gap: bool = False) -> None:
        if self.sink is None:
            self._add_now(fields)
            if clears_gap:
                self._gap = False
            return
        self.sink.put(self, fields, clears_gap)

    @_redis_retry
    def _add_now(self, fields: dict[str, bytes]) -> None:
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
        if self._gap or not self.live:
            return  # the repair before the terminal event carries it
        self._pending.append(text)
        if time.monotonic() - self._last_write >= self.coalesce_seconds:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        data = orjson.dumps({"text": "".join(self._pending)})
        self._pending.clear()
        self._last_write = time.monotonic()
        try:
            self._add({"event": b"delta", "data": data})
        except redis.RedisError as exc:
            log.warning("stream %s: delta not written (%s); repaired at the end", self.key, exc)
            self._gap = True

    def reset(self, attempt: int) -> None:
        self._text.clear()
        self._pending.clear()  # text of the attempt being dropped
        self._attempt = attempt
        if not self.live:
            return
        try:
            self._add({"event": b"reset", "data": orjson.dumps({"attempt": attempt})}, True)
        except redis.RedisError as exc:
            log.warning("stream %s: reset not written (%s)", self.key, exc)
            self._gap = True

    def terminal(self, job: Job, also: Callable[[Pipeline], None] | None = None) -> None:
        """Append the terminal event; the stream then lives `ttl` more seconds. `also`
        adds commands to the same transaction (the worker's: the job's cancel flag
        deleted, its admission settled); they must bear being repeated, since a retry
        after a lost reply runs the transaction again.

        Never raises: a reader who misses it reads the job row, which is final already.
        """
        if self.sink is not None:
            self.sink.wait(self)  # the job's entries first: readers stop at the terminal
        try:
            self._terminal(job, also)
        except redis.RedisError as exc:
            log.warning("stream %s: terminal event not written: %s", self.key, exc)

    @_redis_retry
    def _terminal(self, job: Job, also: Callable[[Pipeline], None] | None) -> None:
        # MULTI/EXEC: a retry after a lost reply repeats the entries only after a first
        # terminal event, where readers have stopped.
        pipe = self.client.pipeline(transaction=True)
        if self._pending and not self._gap:
            held = {"event": b"delta", "data": orjson.dumps({"text": "".join(self._pending)})}
            pipe.xadd(self.key, held, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        if self._gap:
            reset = {"event": b"reset", "data": orjson.dumps({"attempt": self._attempt})}
            whole = {"event": b"delta", "data": orjson.dumps({"text": "".join(self._text)})}
            for fields in (reset, whole):
                pipe.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.xadd(self.key, terminal_entry(job), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.expire(self.key, self.ttl)
        if also is not None:
            also(pipe)
        pipe.execute()


class StreamSink:
    """One thread that writes the stream entries of every job of a worker process.

    At a thousand jobs in flight, each job writing its own deltas cost a round trip per
    entry: a pool checkout, a send and a thread woken on the reply, a fifth of an S2
    worker's CPU. A job thread now hands its entry over and goes on; the sink's thread
    sends whatever accumulated while its previous write was under way, in one pipeline.
    At low load a batch would be one entry and the handover a thread switch on the way to
    the reader: while the process runs at most `INLINE_JOBS` jobs (`jobs_running`), an
    entry handed to an idle sink is written from the job's thread instead. Not with more:
    a thousand job threads each waiting on their own write cost an S2 worker a sixth of
    its jobs per second.

    An entry that cannot be written marks its writer's gap, which the terminal event
    repairs (see `StreamWriter`); a reset handed over clears the gap before any entry
    after it, so a failed batch that held the reset still leaves the gap set.
    """

    def __init__(
        self, client: redis.Redis, jobs_running: Callable[[], int] = lambda: INLINE_JOBS + 1
    ) -> None:
        self.client = client
        self.jobs_running = jobs_running
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)
        self._queue: list[tuple[StreamWriter, dict[str, bytes], bool]] = []
        self._due = threading.Event()
        self._thread: threading.Thread | None = None
        self._writing = False  # a batch is being written

    def put(self, writer: StreamWriter, fields: dict[str, bytes], clears_gap: bool) -> None:
        """Hand an entry over. At low load, while the sink has nothing queued or in flight
        (and none of this writer's entries is pending), it is written at once from the
        caller's thread, and raises RedisError as a writer's own write does."""
        quiet = self.jobs_running() <= INLINE_JOBS
        with self._lock:
            now = quiet and not self._queue and not self._writing and not writer.unwritten
            if not now:
                if clears_gap:
                    writer._gap = False
                self._queue.append((writer, fields, not writer._expiry_set))
                writer._expiry_set = True
                writer.unwritten += 1
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._write_forever, name="inferq-streams", daemon=True
                    )
                    self._thread.start()
        if now:
            self._write([(writer, fields, not writer._expiry_set)])
            writer._expiry_set = True
            if clears_gap:
                writer._gap = False
            return
        self._due.set()

    def wait(self, writer: StreamWriter) -> None:
        """Until every entry `writer` handed over is written or has failed."""
        with self._written:
            while writer.unwritten:
                self._written.wait()

    def _write_forever(self) -> None:
        failures = FailureLog(log, "writing job streams")
        while True:
            self._due.wait()
            self._due.clear()
            with self._lock:
                batch, self._queue = self._queue, []
                self._writing = bool(batch)
            if not batch:
                continue
            try:
                self._write(batch)
            except Exception as exc:  # Redis away: each writer repairs its own gap
                failures.failed(exc)
                self._resolve(batch, failed=True)
            else:
                failures.worked()
                self._resolve(batch, failed=False)

    def _write(self, batch: list[tuple[StreamWriter, dict[str, bytes], bool]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for writer, fields, expire in batch:
            pipe.xadd(writer.key, fields, maxlen=writer.maxlen, approximate=True)  # type: ignore[arg-type]
            if expire:
                pipe.expire(writer.key, writer.ttl)
        pipe.execute()

    def _resolve(
        self, batch: list[tuple[StreamWriter, dict[str, bytes], bool]], failed: bool
    ) -> None:
        with self._written:
            self._writing = False
            for writer, _fields, expire in batch:
                writer.unwritten -= 1
                if failed:
                    writer._gap = True
                    if expire:
                        writer._expiry_set = False
            self._written.notify_all()


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


async def text_until(client: aioredis.Redis, job_id: str, last: str) -> str:
    """The text a reader holds after reading up to entry `last`: deltas since the last reset."""
    entries: Any = await client.xrange(redis_keys.job_stream(job_id), "-", last)
    text: list[str] = []
    for _entry_id, fields in entries:
        if fields[b"event"] == b"reset":
            text.clear()
        elif fields[b"event"] == b"delta":
            text.append(orjson.loads(fields[b"data"])["text"])
    return "".join(text)


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
