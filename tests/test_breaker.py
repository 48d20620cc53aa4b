"""The shared circuit breaker's arithmetic, against a real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from inferq.resilience.breaker import BreakerConfig, CircuitBreaker


@pytest.fixture
def breaker(redis_url: str) -> CircuitBreaker:
    client = redis.Redis.from_url(redis_url)
    config = BreakerConfig(min_calls=10, failure_threshold=0.5, open_seconds=0.5)
    return CircuitBreaker(client, config)


def test_fast_failures_at_a_low_rate_do_not_open_it(breaker: CircuitBreaker) -> None:
    # 60 calls start; 12 fail at once (a 503 is quick) while the 48 successes still
    # stream. Over finished calls that is 12 failures of 12: it must stay closed.
    assert all(breaker.allow("ep") for _ in range(60))
    states = [breaker.record("ep", ok=False) for _ in range(12)]
    assert set(states) == {"closed"}
    assert breaker.state("ep") == {"endpoint": "ep", "state": "closed", "calls": 60, "failures": 12}


def test_a_failing_endpoint_opens_then_half_open_probe_closes_it(breaker: CircuitBreaker) -> None:
    for _ in range(10):
        assert breaker.allow("ep")
        breaker.record("ep", ok=False)
    assert breaker.state("ep")["state"] == "open"
    assert 0.3 < breaker.enter("ep").wait <= 0.5
    time.sleep(0.55)
    assert breaker.enter("ep").wait == 0.0  # the first probe
    assert breaker.enter("ep").wait == 0.0  # the second (two probes by default)
    assert 0 < breaker.enter("ep").wait <= 1.0  # no third: wait for the probes
    assert breaker.record("ep", ok=True) == "closed"


def test_a_failed_probe_opens_it_again(breaker: CircuitBreaker) -> None:
    for _ in range(10):
        breaker.allow("ep")
        breaker.record("ep", ok=False)
    time.sleep(0.55)
    assert breaker.allow("ep")
    assert breaker.record("ep", ok=False) == "open"
    assert not breaker.allow("ep")


def test_only_half_open_calls_are_probes(breaker: CircuitBreaker) -> None:
    # A probe's outcome must be recorded; a closed circuit's successes need not be.
    entry = breaker.enter("ep")
    assert (entry.wait, entry.probe) == (0.0, False)
    for _ in range(10):
        breaker.allow("ep")
        breaker.record("ep", ok=False)
    shut = breaker.enter("ep")
    assert shut.wait > 0 and not shut.probe
    time.sleep(0.55)
    probes = [breaker.enter("ep") for _ in range(3)]
    let_through = [(e.wait == 0.0, e.probe) for e in probes]
    assert let_through == [(True, True), (True, True), (False, False)]
    assert breaker.record("ep", ok=True) == "closed"
    assert not breaker.enter("ep").probe


def _trusting(redis_url: str, seconds: float) -> CircuitBreaker:
    config = BreakerConfig(
        min_calls=10, failure_threshold=0.5, open_seconds=0.5, closed_trust_seconds=seconds
    )
    return CircuitBreaker(redis.Redis.from_url(redis_url), config)


def test_calls_under_a_trusted_closed_circuit_are_counted_with_the_next_failure(
    redis_url: str,
) -> None:
    breaker = _trusting(redis_url, 5.0)
    assert all(breaker.allow("ep") for _ in range(20))
    assert breaker.state("ep")["calls"] == 1  # only the first call asked Redis
    assert breaker.record("ep", ok=False) == "closed"
    assert breaker.state("ep") == {"endpoint": "ep", "state": "closed", "calls": 20, "failures": 1}


def test_a_failure_that_opens_the_circuit_ends_the_trust_at_once(redis_url: str) -> None:
    breaker = _trusting(redis_url, 5.0)
    for _ in range(10):
        assert breaker.allow("ep")
        breaker.record("ep", ok=False)
    assert breaker.state("ep")["state"] == "open"
    assert breaker.enter("ep").wait > 0


def test_a_circuit_another_worker_opened_is_seen_once_the_trust_runs_out(
    redis_url: str,
) -> None:
    trusting, other = _trusting(redis_url, 0.3), _trusting(redis_url, 0.0)
    assert trusting.allow("ep")
    for _ in range(10):
        if other.allow("ep"):
            other.record("ep", ok=False)
    assert not other.allow("ep")
    assert trusting.allow("ep")  # still trusting its closed answer
    time.sleep(0.35)
    assert trusting.enter("ep").wait > 0


def test_without_redis_calls_go_ahead_and_are_counted_once_it_is_back(redis_url: str) -> None:
    # The breaker guards the provider; a Redis it cannot ask must not stop every call.
    from inferq.redis_clients import worker_client
    from tests.conftest import free_port
    from tests.tcp_proxy import TcpProxy

    parts = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = TcpProxy((parts["host"], parts["port"]))
    proxy.port = free_port()
    client = worker_client(f"redis://127.0.0.1:{proxy.port}/{parts.get('db', 0)}", 4, 2.0)
    breaker = CircuitBreaker(client, BreakerConfig(min_calls=10, failure_threshold=0.5))
    entries = [breaker.enter("ep") for _ in range(3)]  # nothing listens on the port yet
    assert all(entry.wait == 0.0 and not entry.probe for entry in entries)
    assert breaker.record("ep", ok=False) == "unknown"
    proxy.start()
    try:
        assert breaker.allow("ep")
        # The three calls started without Redis are counted with the next question.
        assert breaker.state("ep")["calls"] == 4
    finally:
        proxy.cut()
