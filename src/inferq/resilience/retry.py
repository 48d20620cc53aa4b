"""The one retry policy for provider calls, used by every job kind.

Exponential backoff with full jitter, bounded in attempts and in total time; a
`Retry-After` from the provider wins over the computed delay. Only what may succeed
on a second try is retried: timeouts, connection errors, 429 and 5xx. A provider's 4xx
fails at once with its message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from inferq.errors import ProviderError, ProviderRateLimited

T = TypeVar("T")


class Interrupted(Exception):
    """The wait before a retry was cut short (the job was cancelled or timed out)."""


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_elapsed: float = 120.0

    def delay(self, state: RetryCallState) -> float:
        """Seconds to wait before the next attempt."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderRateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_elapsed)
        jitter = wait_random_exponential(multiplier=self.base_delay, max=self.max_delay)
        return float(jitter(state))

    def call(
        self,
        attempt: Callable[[int], T],
        stop: threading.Event,
        before_retry: Callable[[int, ProviderError, float], None] | None = None,
    ) -> T:
        """Run `attempt(n)` (n from 1) until it succeeds, fails for good, or `stop` is set.

        `before_retry(n, error, delay)` is told of each retry before its wait. Raises the
        last ProviderError when attempts or time run out, `Interrupted` if `stop` is set.
        """

        def sleep(seconds: float) -> None:
            if stop.wait(seconds):
                raise Interrupted

        def notify(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if before_retry is not None and isinstance(exc, ProviderError):
                seconds = state.next_action.sleep if state.next_action else 0.0
                before_retry(state.attempt_number, exc, seconds)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_elapsed),
            wait=self.delay,
            retry=retry_if_exception(is_retryable),
            sleep=sleep,
            before_sleep=notify,
            reraise=True,
        )
        try:
            return retrying(lambda: attempt(retrying.statistics.get("attempt_number", 1)))
        finally:
            # A Retrying holds bound methods of itself (its iteration's actions): a
            # reference cycle per job, which only the cyclic collector's full passes
            # freed (40-50 ms pauses of a busy worker). Emptied, it goes with its last
            # reference.
            retrying.iter_state.reset()
