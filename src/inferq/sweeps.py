"""Background passes that one worker of many runs at a time (the reaper, the batch sweep,
the result and file expiries).

Each runs on its own thread every `interval` seconds. A pass first takes the sweep's lock
in Redis for the interval: with several workers, whichever takes it runs the pass and the
others skip theirs. Failures are logged as `FailureLog` does; a skipped pass asked the
database nothing and says nothing (counting it as a success logged "works again" in the
middle of an outage).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

import redis

from inferq.failure_log import FailureLog


class LockedSweep(ABC):
    # The Redis key one worker holds while its pass runs, and what the log calls it.
    lock: str
    what: str

    def __init__(self, client: redis.Redis, interval_seconds: float) -> None:
        self.client = client
        self.interval = interval_seconds
        self._stop = threading.Event()
        self._failures = FailureLog(logging.getLogger(type(self).__module__), self.what)
        name = "inferq-" + self.what.replace(" ", "-")
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def sweep(self) -> int | None:
        """One pass; returns how many things it handled, or None when it did not run
        (another pass holds the lock)."""
        lock_ms = max(int(self.interval * 1000), 500)
        if not self.client.set(self.lock, b"1", nx=True, px=lock_ms):
            return None
        return self.run_pass()

    @abstractmethod
    def run_pass(self) -> int:
        """The pass itself, under the lock."""

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                handled = self.sweep()
            except Exception as exc:
                self._failures.failed(exc)
            else:
                if handled is not None:
                    self._failures.worked()


__all__ = ["LockedSweep"]
