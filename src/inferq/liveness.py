"""A worker's heartbeat, and the cancel flags of the jobs it is running.

One thread per worker process: it refreshes the worker's alive key (the reaper treats a
missing key as a dead worker) and watches for cancellations. Every cancel flag is set
together with a bump of one counter; the thread reads that counter each poll and the
flags of its in-flight jobs (one MGET) only when it moved or a job was added. A worker
with a thousand jobs in flight read a thousand keys four times a second before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from inferq import redis_keys

log = logging.getLogger(__name__)


class StopSignal(threading.Event):
    """Set when a running job must stop; `reason` says why: "cancelled" or "timeout"."""

    def __init__(self, deadline: float | None = None) -> None:
        super().__init__()
        self.deadline = deadline
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
            self.set()


class Liveness:
    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        ttl_seconds: float,
        heartbeat_seconds: float,
        cancel_poll_seconds: float = 0.25,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.ttl_ms = int(ttl_seconds * 1000)
        self.heartbeat_seconds = heartbeat_seconds
        self.cancel_poll_seconds = cancel_poll_seconds
        self._in_flight: dict[str, StopSignal] = {}
        self._lock = threading.Lock()
        # Jobs added since the flags were last read, and the counter then.
        self._added: list[str] = []
        self._seen: bytes | str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="inferq-liveness", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.client.delete(redis_keys.worker_alive(self.worker_id))
        except redis.RedisError:
            log.warning("could not remove the alive key of %s", self.worker_id)

    def beat(self) -> None:
        self.client.set(redis_keys.worker_alive(self.worker_id), b"1", px=self.ttl_ms)

    def track(self, job_id: str, timeout_seconds: float | None = None) -> StopSignal:
        """Watch a job's cancel flag and its deadline; the signal is set when either hits."""
        deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
        signal = StopSignal(deadline)
        with self._lock:
            self._in_flight[job_id] = signal
            self._added.append(job_id)  # its flag may have been set before it was tracked
        return signal

    def untrack(self, job_id: str) -> None:
        with self._lock:
            self._in_flight.pop(job_id, None)

    def poll_cancels(self) -> None:
        with self._lock:
            in_flight = dict(self._in_flight)
            added, self._added = self._added, []
        if not in_flight:
            return
        now = time.monotonic()
        for signal in in_flight.values():
            if signal.deadline is not None and now >= signal.deadline:
                signal.stop("timeout")
        try:
            counter = self.client.get(redis_keys.CANCELS)
            if counter == self._seen:
                # No flag set since the last read: only new jobs' flags can be up.
                watched = [(job_id, in_flight[job_id]) for job_id in added if job_id in in_flight]
            else:
                watched = list(in_flight.items())
            self._seen = counter
            if not watched:
                return
            flags = self.client.mget([redis_keys.cancel_flag(job_id) for job_id, _ in watched])
        except redis.RedisError:
            with self._lock:
                self._added.extend(in_flight)  # read them all next time
            raise
        for (_, signal), flag in zip(watched, flags, strict=True):
            if flag is not None:
                signal.stop("cancelled")

    def _loop(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_seconds
        while not self._stop.wait(self.cancel_poll_seconds):
            try:
                self.poll_cancels()
                if time.monotonic() >= next_beat:
                    self.beat()
                    next_beat = time.monotonic() + self.heartbeat_seconds
            except redis.RedisError as exc:
                log.warning("liveness: Redis error: %s", exc)


def request_stops(pipe: Any, job_ids: Iterable[str], ttl_seconds: int) -> None:
    """Queue on `pipe` (sync or asyncio) what asks workers to stop these running jobs:
    each job's cancel flag, then the bump of the counter workers watch. Sent in this
    order on one connection, so a worker that sees the bump sees the flags."""
    for job_id in job_ids:
        pipe.set(redis_keys.cancel_flag(job_id), b"1", ex=ttl_seconds)
    pipe.incr(redis_keys.CANCELS)
