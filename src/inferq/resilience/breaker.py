"""A circuit breaker per provider endpoint, shared by every worker through Redis.

    closed ──(failure rate ≥ threshold over ≥ min_calls in the window)──▶ open
    open ──(open_seconds later, on the next call)──▶ half_open
    half_open: at most `probes` real calls go through;
        a probe succeeds ──▶ closed        a probe fails ──▶ open again

Only real traffic feeds it: no synthetic probes that would cost money. Each transition
is one Lua script, so workers on many machines agree on the state (a model run inside
the worker has an endpoint per host, `ModelSpec.endpoint`: its failures are that
host's). The window is fixed (counters reset every `window_seconds`), which is simple
and bounded.

A worker that found the circuit closed trusts that answer for `closed_trust_seconds`:
the calls it starts meanwhile are counted in the process and go to Redis with its next
question or its next failure, so a failure is always weighed against every call started
before it. Asking on every call was a Redis round trip per job (170 µs of a worker's CPU
and 0.2 ms of the job's time, about 2 % of a job, measured on a slow machine).
The price: a circuit another worker opened is seen that much later.

A worker that cannot reach Redis lets calls go ahead (fails open) and counts them with
its next question once Redis answers: the breaker protects the provider, and a provider
call needs no Redis.

The failure rate is failures over calls *started* in the window, not over calls
finished: a failure (a 503, a refused connection) comes back in milliseconds while a
success streams for seconds, so a rate over finished calls is all failures for the
first seconds of any burst and would open the circuit at a 10 % error rate. A call still
running counts as not failed until it fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from inferq import redis_keys
from inferq.config import Settings
from inferq.failure_log import FailureLog

log = logging.getLogger(__name__)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_ROLL = """
local function roll(key, now, window_ms)
  if now - tonumber(redis.call('HGET', key, 'window_start') or '0') >= window_ms then
    redis.call('HSET', key, 'window_start', now, 'calls', 0, 'failures', 0)
  end
end
"""

ALLOW = (
    _NOW
    + _ROLL
    + """
local key, open_ms, probes_max, idle = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local window_ms, started = tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HGET', key, 'state') or 'closed'
if state == 'closed' then
  roll(key, now, window_ms)
  redis.call('HINCRBY', key, 'calls', started)
  redis.call('EXPIRE', key, idle)
  return {1, state, 0}
end
if state == 'open' then
  local shut = open_ms - (now - tonumber(redis.call('HGET', key, 'opened_at') or '0'))
  if shut > 0 then return {0, state, shut} end
  redis.call('HSET', key, 'state', 'half_open', 'probes', 0, 'half_open_at', now)
  state = 'half_open'
end
local probes = tonumber(redis.call('HGET', key, 'probes') or '0')
-- Probes lost with a dead worker must not keep the circuit half-open for ever.
local since = now - tonumber(redis.call('HGET', key, 'half_open_at') or '0')
if probes >= probes_max and since > open_ms then
  redis.call('HSET', key, 'probes', 0, 'half_open_at', now)
  probes = 0
end
if probes < probes_max then
  redis.call('HINCRBY', key, 'probes', 1)
  redis.call('EXPIRE', key, idle)
  return {1, state, 0}
end
-- The probes in flight decide soon: ask again within a second.
return {0, state, math.min(open_ms - since, 1000)}
"""
)

RECORD = (
    _NOW
    + _ROLL
    + """
local key, ok = KEYS[1], ARGV[1] == '1'
local window_ms, min_calls = tonumber(ARGV[2]), tonumber(ARGV[3])
local threshold, idle, started = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local state = redis.call('HGET', key, 'state') or 'closed'
redis.call('EXPIRE', key, idle)
if state == 'half_open' then
  if ok then
    redis.call('HSET', key, 'state', 'closed', 'calls', 0, 'failures', 0, 'window_start', now)
    redis.call('HDEL', key, 'probes', 'half_open_at', 'opened_at')
    return 'closed'
  end
  redis.call('HSET', key, 'state', 'open', 'opened_at', now)
  return 'open'
end
if state == 'open' then return state end
roll(key, now, window_ms)
if started > 0 then redis.call('HINCRBY', key, 'calls', started) end
if ok then return state end
-- A call started in the last window may fail in this one: never more failures than calls.
local failures = redis.call('HINCRBY', key, 'failures', 1)
local calls = math.max(tonumber(redis.call('HGET', key, 'calls') or '0'), failures)
if calls >= min_calls and failures / calls >= threshold then
  redis.call('HSET', key, 'state', 'open', 'opened_at', now)
  return 'open'
end
return 'closed'
"""
)


@dataclass(frozen=True)
class Entry:
    """The breaker's answer to a call about to start."""

    # 0 if the call may go ahead, else the seconds until it is worth asking again.
    wait: float
    # A half-open probe: its outcome closes or reopens the circuit, so it must be
    # recorded. A success of a call let through a closed circuit changes nothing
    # (RECORD would only refresh the key's expiry, which ALLOW did): the caller may skip
    # that round trip.
    probe: bool


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: float = 0.5
    min_calls: int = 10
    window_seconds: float = 30.0
    open_seconds: float = 15.0
    half_open_probes: int = 2
    idle_expiry_seconds: int = 86_400
    closed_trust_seconds: float = 0.0

    @classmethod
    def from_settings(cls, s: Settings) -> BreakerConfig:
        return cls(
            failure_threshold=s.breaker_failure_threshold,
            min_calls=s.breaker_min_calls,
            window_seconds=s.breaker_window_seconds,
            open_seconds=s.breaker_open_seconds,
            half_open_probes=s.breaker_half_open_probes,
            closed_trust_seconds=s.breaker_closed_trust_seconds,
        )


class CircuitBreaker:
    def __init__(self, client: redis.Redis, config: BreakerConfig | None = None) -> None:
        self.client = client
        self.config = config or BreakerConfig()
        self._allow = client.register_script(ALLOW)
        self._record = client.register_script(RECORD)
        self._lock = threading.Lock()
        # endpoint → until when (monotonic) its circuit is taken to be closed
        self._closed_until: dict[str, float] = {}
        # endpoint → calls started under that trust and not yet counted in Redis
        self._uncounted: dict[str, int] = {}
        self._unreachable = FailureLog(log, "circuit breaker (Redis); calls go ahead")

    def allow(self, endpoint: str) -> bool:
        """May a call to `endpoint` go ahead now? (In half-open, it takes a probe slot.)"""
        return self.enter(endpoint).wait == 0.0

    def enter(self, endpoint: str) -> Entry:
        """Ask to call `endpoint` now: in half-open, a call let through is a probe."""
        c = self.config
        now = time.monotonic()
        with self._lock:
            if self._closed_until.get(endpoint, 0.0) > now:
                self._uncounted[endpoint] = self._uncounted.get(endpoint, 0) + 1
                return Entry(0.0, probe=False)
        uncounted = self._take_uncounted(endpoint)
        try:
            allowed, state, wait_ms = self._allow(
                keys=[redis_keys.breaker(endpoint)],
                args=[
                    int(c.open_seconds * 1000),
                    c.half_open_probes,
                    c.idle_expiry_seconds,
                    int(c.window_seconds * 1000),
                    uncounted + 1,
                ],
            )
        except redis.RedisError as exc:
            # Fail open: the breaker guards the provider, and the call does not need
            # Redis (its text reaches the client from the job row). Refusing every call
            # handed each job back at once, three times in milliseconds, and failed it.
            self._give_back_uncounted(endpoint, uncounted + 1)
            self._unreachable.failed(exc)
            return Entry(0.0, probe=False)
        except BaseException:
            self._give_back_uncounted(endpoint, uncounted)
            raise
        self._unreachable.worked()
        self._trust(endpoint, _text(state), now)
        if int(allowed):
            return Entry(0.0, probe=_text(state) == "half_open")
        return Entry(max(int(wait_ms), 50) / 1000, probe=False)

    def record(self, endpoint: str, ok: bool) -> str:
        """Feed the outcome of a call `allow` let through; returns the state after it."""
        c = self.config
        uncounted = self._take_uncounted(endpoint)
        try:
            state = _text(
                self._record(
                    keys=[redis_keys.breaker(endpoint)],
                    args=[
                        "1" if ok else "0",
                        int(c.window_seconds * 1000),
                        c.min_calls,
                        c.failure_threshold,
                        c.idle_expiry_seconds,
                        uncounted,
                    ],
                )
            )
        except redis.RedisError as exc:
            # This outcome goes uncounted; the calls started before it are kept.
            self._give_back_uncounted(endpoint, uncounted)
            self._unreachable.failed(exc)
            return "unknown"
        except BaseException:
            self._give_back_uncounted(endpoint, uncounted)
            raise
        self._unreachable.worked()
        if state != "closed":
            self._trust(endpoint, state, 0.0)
        return state

    def _trust(self, endpoint: str, state: str, now: float) -> None:
        """Trust a closed circuit for a while; any other state not at all."""
        with self._lock:
            if state == "closed" and self.config.closed_trust_seconds > 0:
                self._closed_until[endpoint] = now + self.config.closed_trust_seconds
            else:
                self._closed_until.pop(endpoint, None)

    def _take_uncounted(self, endpoint: str) -> int:
        with self._lock:
            return self._uncounted.pop(endpoint, 0)

    def _give_back_uncounted(self, endpoint: str, calls: int) -> None:
        """Calls not counted because Redis could not be asked: counted next time."""
        if calls:
            with self._lock:
                self._uncounted[endpoint] = self._uncounted.get(endpoint, 0) + calls

    def state(self, endpoint: str) -> dict[str, Any]:
        raw: dict[bytes, bytes] = self.client.hgetall(redis_keys.breaker(endpoint))  # type: ignore[assignment]
        return describe(endpoint, raw)


def describe(endpoint: str, raw: Mapping[Any, Any]) -> dict[str, Any]:
    """A breaker's stored hash as the admin endpoint and metrics show it."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return {
        "endpoint": endpoint,
        "state": fields.get("state", "closed"),
        "calls": int(fields.get("calls", 0)),
        "failures": int(fields.get("failures", 0)),
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def all_states(client: aioredis.Redis) -> list[dict[str, Any]]:
    """Every known breaker (API side, async)."""
    prefix = redis_keys.breaker("")
    states = []
    async for key in client.scan_iter(match=prefix + "*", count=500):
        name = key.decode() if isinstance(key, bytes) else str(key)
        states.append(describe(name.removeprefix(prefix), await client.hgetall(name)))
    return sorted(states, key=lambda s: str(s["endpoint"]))
