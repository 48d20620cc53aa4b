"""Job-store calls a worker must not skip, repeated while the database is unreachable.

A worker that ran a job holds the result in memory only. Had it given up after one
failed save, the row would stay `running` under a worker that is alive, which the reaper
never takes back: the job would never end. Claims and hand-backs are the same: a claim
that fails loses its message (acknowledged as a failed task), a hand-back that fails
leaves the row `running`. So these calls wait for the database, backing off to a few
seconds between tries, until it answers or the worker shuts down (its jobs then go to
the reaper once its heartbeat stops).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

log = logging.getLogger(__name__)

T = TypeVar("T")

# The server is down or unreachable, or every pooled connection is busy.
UNREACHABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


class UntilReachable:
    def __init__(self, stopping: threading.Event, max_pause_seconds: float = 5.0) -> None:
        self.stopping = stopping
        self.max_pause = max_pause_seconds

    def __call__(
        self, change: Callable[[], T | None], read_back: Callable[[], T | None], what: str
    ) -> T | None:
        """`change()`, a conditional write that returns None when it did not apply, again
        while it fails for want of the database. A retry that finds nothing to change
        calls `read_back()`: an earlier try may have committed before its connection
        broke, and the caller takes that over."""

        def once(try_number: int) -> T | None:
            result = change()
            if result is None and try_number > 1:
                result = read_back()
            return result

        retrying = Retrying(
            retry=retry_if_exception(self._worth_waiting),
            # Jitter: a thousand threads must not all come back in the same millisecond.
            wait=wait_random_exponential(multiplier=0.1, max=self.max_pause),
            sleep=self._pause,
            before_sleep=lambda state: self._note(state, what),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return once(attempt.retry_state.attempt_number)
        raise AssertionError("unreachable: Retrying returns or raises")  # pragma: no cover

    def _pause(self, seconds: float) -> None:
        self.stopping.wait(seconds)  # cut short when the worker shuts down

    def _worth_waiting(self, exc: BaseException) -> bool:
        return isinstance(exc, UNREACHABLE) and not self.stopping.is_set()

    @staticmethod
    def _note(state: RetryCallState, what: str) -> None:
        if state.attempt_number == 1:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("%s: database unreachable (%s); trying until it answers", what, exc)
        elif state.attempt_number % 20 == 0:
            log.warning("%s: database still unreachable after %d tries", what, state.attempt_number)
