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

    def __call__(self, call: Callable[[int], T], what: str) -> T:
        """`call(try_number)`, again while it fails for want of the database."""
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
                return call(attempt.retry_state.attempt_number)
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
