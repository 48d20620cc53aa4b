"""Admission control per API key, atomic in Redis so any number of API processes agree.

Three limits, checked and taken together by one Lua script:
- requests per minute: a sliding log of admission times (exact over any 60 s window);
- tokens per minute: each admitted job reserves prompt tokens (estimated) + max_tokens,
  and the worker settles the reservation to the real usage when the job ends;
- active jobs: the key's queued + running jobs, released when each one ends.
A sliding log costs one sorted-set entry per request in the window, which is bounded by
the limit itself. Keys carry a hash tag, so a key's structures share a cluster slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.client import Pipeline

from inferq import redis_keys
from inferq.jobs.schemas import Job

log = logging.getLogger(__name__)

WINDOW_MS = 60_000

ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local requests, tokens, amounts, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local window, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local reserve, max_active, job = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local horizon = now - window
redis.call('ZREMRANGEBYSCORE', requests, 0, horizon)
-- The hash keeps each reservation and, under '_total', their sum: reading the sum is
-- O(1) instead of adding up every reservation in the window on every request.
for _, old in ipairs(redis.call('ZRANGEBYSCORE', tokens, 0, horizon)) do
  local amount = tonumber(redis.call('HGET', amounts, old) or '0')
  -- Never `-amount`: for 0 that is -0, which HINCRBY refuses as not an integer.
  if redis.call('HDEL', amounts, old) == 1 and amount ~= 0 then
    redis.call('HINCRBY', amounts, '_total', 0 - amount)
  end
end
redis.call('ZREMRANGEBYSCORE', tokens, 0, horizon)
local count = redis.call('ZCARD', requests)
if rpm >= 0 and count >= rpm then
  local oldest = redis.call('ZRANGE', requests, 0, 0, 'WITHSCORES')
  return {0, 'requests', tonumber(oldest[2]) + window - now, rpm, 0}
end
if tpm >= 0 then
  local used = tonumber(redis.call('HGET', amounts, '_total') or '0')
  if reserve > tpm then return {0, 'tokens_exceed_limit', 0, tpm, tpm - used} end
  if used + reserve > tpm then
    -- Wait until enough of the oldest reservations leave the window.
    local need, freed, wait = used + reserve - tpm, 0, window
    local members = redis.call('ZRANGE', tokens, 0, -1, 'WITHSCORES')
    for i = 1, #members, 2 do
      freed = freed + tonumber(redis.call('HGET', amounts, members[i]) or '0')
      if freed >= need then wait = tonumber(members[i + 1]) + window - now; break end
    end
    return {0, 'tokens', wait, tpm, tpm - used}
  end
end
if max_active >= 0 and redis.call('SCARD', active) >= max_active then
  return {0, 'active_jobs', 1000, max_active, 0}
end
redis.call('ZADD', requests, now, job)
redis.call('ZADD', tokens, now, job)
redis.call('HSET', amounts, job, reserve)
redis.call('HINCRBY', amounts, '_total', reserve)
redis.call('SADD', active, job)
for _, key in ipairs({requests, tokens, amounts}) do redis.call('PEXPIRE', key, window * 2) end
return {1, 'ok', 0, rpm, rpm >= 0 and rpm - count - 1 or -1}
"""

SETTLE = """
local reserved = redis.call('HGET', KEYS[1], ARGV[1])
if reserved then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  local change = tonumber(ARGV[2]) - tonumber(reserved)
  if change ~= 0 then redis.call('HINCRBY', KEYS[1], '_total', change) end
end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Decision:
    admitted: bool
    limit_name: str
    retry_after_seconds: int
    limit: int
    remaining: int

    def headers(self) -> dict[str, str]:
        """RateLimit-* (IETF draft) and, when refused, Retry-After."""
        headers: dict[str, str] = {}
        if self.limit >= 0:
            headers["RateLimit-Limit"] = str(self.limit)
            headers["RateLimit-Remaining"] = str(max(self.remaining, 0))
            headers["RateLimit-Reset"] = str(self.retry_after_seconds if not self.admitted else 60)
        if not self.admitted:
            headers["Retry-After"] = str(max(self.retry_after_seconds, 1))
        return headers


def estimate_prompt_tokens(texts: list[str]) -> int:
    """A cheap upper-leaning estimate (4 characters a token, 4 tokens of framing each):
    the API has no tokenizer; the reservation is settled to the real count later."""
    return sum(math.ceil(len(t) / 4) + 4 for t in texts)


def _keys(key_id: str) -> list[str]:
    return [redis_keys.rate(key_id, part) for part in ("requests", "tokens", "amounts", "active")]


@dataclass(frozen=True)
class Slot:
    """An active-job slot, and whether it was taken inside the window (its job may still
    be on its way into the database)."""

    job_id: str
    recent: bool


class Admission:
    """API side: take a slot (or refuse) before a job is stored."""

    def __init__(
        self, client: aioredis.Redis, window_ms: int = WINDOW_MS, check_every_ms: int = 5_000
    ) -> None:
        self.client = client
        self.window_ms = window_ms
        self.check_every_ms = check_every_ms
        self._admit = client.register_script(ADMIT)
        self._settle = client.register_script(SETTLE)

    async def admit(
        self,
        key_id: str,
        job_id: str,
        reserve_tokens: int,
        rpm: int | None,
        tpm: int | None,
        max_active: int | None,
    ) -> Decision:
        reply = await self._admit(
            keys=_keys(key_id),
            args=[
                self.window_ms,
                _or_none(rpm),
                _or_none(tpm),
                reserve_tokens,
                _or_none(max_active),
                job_id,
            ],
        )
        admitted, name, wait_ms, limit, remaining = reply
        return Decision(
            bool(int(admitted)),
            name.decode() if isinstance(name, bytes) else str(name),
            math.ceil(int(wait_ms) / 1000),
            int(limit),
            int(remaining),
        )

    async def release(self, key_id: str, job_id: str, tokens_used: int = 0) -> None:
        """The job ended before a worker saw it (cancelled, or never enqueued)."""
        keys = _keys(key_id)
        await self._settle(keys=[keys[2], keys[3]], args=[job_id, tokens_used])

    async def slots_to_check(self, key_id: str) -> list[Slot]:
        """The key's active-job slots, for the caller to free those whose jobs ended
        without freeing them: a terminal event never written (a worker killed between
        saving a job and telling, or cut off from Redis), a release a full Redis refused.
        The set has no expiry (a job may wait in the queue for hours), so a lost slot
        would hold the key below its limit for good.

        Empty if an API process looked within `check_every_ms`: a key at its limit,
        refused many times a second, costs one look, not one per refusal.
        """
        keys = _keys(key_id)
        checked = redis_keys.rate(key_id, "checked")
        if not await self.client.set(checked, 1, nx=True, px=self.check_every_ms):
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.smembers(keys[3])
            pipe.zrange(keys[1], 0, -1)  # reservations inside the window (admit trims it)
            members, recent = await pipe.execute()
        return [Slot(m.decode(), m in recent) for m in members]

    async def free_slots(self, key_id: str, job_ids: list[str]) -> None:
        await self.client.srem(_keys(key_id)[3], *job_ids)


def settle_in(pipe: Pipeline, key_id: str, job_id: str, tokens_used: int) -> None:
    """Worker side: settle a finished job's reservation to its real usage and free its
    active-job slot, as part of `pipe` (the transaction of the job's terminal event, so
    that a client who sees the job end finds its slot free). Repeating it changes nothing.

    EVAL, not a registered script's EVALSHA: in a pipeline, redis-py checks that its
    scripts are loaded (SCRIPT EXISTS) in a round trip of its own on every execute.
    """
    keys = _keys(key_id)
    pipe.eval(SETTLE, 2, keys[2], keys[3], job_id, tokens_used)


def _or_none(limit: int | None) -> int:
    return -1 if limit is None else limit


class QueueDepth:
    """The service's queued-job count, re-read in the background every `ttl` seconds.

    A request reads the last value and never waits for the count, except the first
    ones, before any value exists. When the request that found the value stale ran the
    COUNT itself, one submit a second paid a database round trip, which showed in the
    submits' p99 at 25 requests a second.
    """

    def __init__(self, count: Callable[[], Awaitable[int]], ttl: float = 1.0) -> None:
        self.count = count
        self.ttl = ttl
        self._value: int | None = None
        self._first: asyncio.Future[int] | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def get(self) -> int:
        if self._value is not None:
            return self._value
        if self._first is None or self._first.done():
            # The first read, shared by the requests that arrive during it; if it failed
            # (the store is down: 503), the next request tries again.
            self._first = asyncio.ensure_future(self.count())
        value = await asyncio.shield(self._first)
        if self._value is None:
            self._value = value
            # A fresh context: the loop must not log under this request's id.
            loop = asyncio.get_running_loop()
            self._refresher = loop.create_task(self._refresh(), context=contextvars.Context())
        return self._value

    async def _refresh(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.ttl)
            try:
                self._value = await self.count()
            except Exception:
                if not failing:  # once per outage, not once a second
                    log.warning("queue depth: cannot count; keeping %s", self._value, exc_info=True)
                failing = True
            else:
                failing = False

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None


def ending(job: Job) -> Callable[[Pipeline], None]:
    """What goes in the transaction of a job's terminal event besides the event: its
    cancel flag deleted and its key's admission settled (active-job slot freed, token
    reservation settled to the real usage), so a client who sees the job end finds its
    slot free. Both bear being repeated. An answer from the response cache used no
    provider tokens: it settles to none (its row still reports the usage it repeats)."""
    key_id = job.key_id
    used = job.usage.prompt_tokens + job.usage.completion_tokens if job.usage else 0
    if job.cached:
        used = 0

    def add(pipe: Pipeline) -> None:
        pipe.delete(redis_keys.cancel_flag(job.id))
        if key_id is not None:
            settle_in(pipe, key_id, job.id, used)

    return add
