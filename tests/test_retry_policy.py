"""RetryPolicy in one process: what the service tests (test_resilience.py) cannot see."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from inferq.errors import ProviderUnavailable
from inferq.resilience.retry import RetryPolicy


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_call_leaves_no_reference_cycle_behind(no_collector: None) -> None:
    # Every job makes one call. A cycle per call is freed only by the collector's full
    # passes, which paused a worker at 100 jobs/s for 40-50 ms every ten seconds.
    policy = RetryPolicy()
    stop = threading.Event()
    for _ in range(50):
        assert policy.call(lambda n: n, stop) == 1
    assert gc.collect() == 0


def test_a_retried_call_still_returns_the_later_attempt(no_collector: None) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.001)
    seen: list[int] = []

    def attempt(n: int) -> str:
        seen.append(n)
        if n < 3:
            raise ProviderUnavailable("not yet")
        return "done"

    assert policy.call(attempt, threading.Event()) == "done"
    assert seen == [1, 2, 3]
