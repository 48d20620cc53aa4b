"""A worker's heartbeat, and the cancel flags of the jobs it is running.

One thread per worker process: it refreshes the worker's alive key (the reaper treats a
missing key as a dead worker) and polls the cancel flags of in-flight jobs in one MGET.
"""

from __future__ import annotations

import logging
import threading
import time

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
        return signal

    def untrack(self, job_id: str) -> None:
        with self._lock:
            self._in_flight.pop(job_id, None)

    def poll_cancels(self) -> None:
        with self._lock:
            watched = list(self._in_flight.items())
        if not watched:
            return
        now = time.monotonic()
        for _, signal in watched:
            if signal.deadline is not None and now >= signal.deadline:
                signal.stop("timeout")
        flags = self.client.mget([redis_keys.cancel_flag(job_id) for job_id, _ in watched])
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
