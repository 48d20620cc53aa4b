"""The exact response cache: a chat or completion job answered from an earlier one.

A job opts in with `cache: "exact"`. Its entry's name is a hash of what decides the
answer (the model, the messages or prompt, every sampling parameter) under the API key
that asked, so one key's prompts and answers never reach another key. A hit is a
succeeded job with the stored text, `cached: true` and no cost, and no provider call; a
miss runs the job and keeps its success for `INFERQ_CACHE_TTL_SECONDS`.

It wraps the generate handler in the worker, so a hit is a job like any other: a row, an
event stream, a webhook. A Redis that cannot be read or written makes a miss, never a
failed job.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
import redis

from inferq import redis_keys
from inferq.failure_log import FailureLog
from inferq.jobs.claims import ClaimedJob, Outcome
from inferq.liveness import StopSignal
from inferq.observability.metrics import CACHE_LOOKUPS
from inferq.providers.request import GenerationRequest
from inferq.streams import StreamWriter

log = logging.getLogger(__name__)

Handler = Callable[[ClaimedJob, StreamWriter, StopSignal], Outcome]
# The request's fields that do not change the answer.
_NOT_IN_KEY = frozenset({"stream", "cache"})
_KEPT = ("text", "finish_reason", "prompt_tokens", "completion_tokens", "served_model")


def cache_key(key_id: str | None, model: str, request: GenerationRequest) -> str:
    asked = {k: v for k, v in vars(request).items() if k not in _NOT_IN_KEY}
    digest = hashlib.sha256(orjson.dumps([model, asked], option=orjson.OPT_SORT_KEYS))
    return redis_keys.response_cache(key_id or "-", digest.hexdigest())


class ResponseCache:
    """Entries in Redis, each a JSON object with its own expiry."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self._failures = FailureLog(log, "response cache (Redis); jobs run uncached")

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self.client.get(key)
        except redis.RedisError as exc:
            self._failures.failed(exc)
            return None
        self._failures.worked()
        return orjson.loads(raw) if isinstance(raw, bytes) else None

    def put(self, key: str, outcome: Outcome) -> None:
        entry = {name: getattr(outcome, name) for name in _KEPT}
        try:
            self.client.set(key, orjson.dumps(entry), ex=self.ttl_seconds)
        except redis.RedisError as exc:
            self._failures.failed(exc)


class CachingHandler:
    """Answers a `cache: "exact"` job from the cache, else asks `inner` and keeps its
    success. Other jobs go straight to `inner`."""

    def __init__(self, inner: Handler, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache

    def __call__(self, claimed: ClaimedJob, writer: StreamWriter, stop: StopSignal) -> Outcome:
        request = claimed.request
        if request.cache != "exact":
            return self.inner(claimed, writer, stop)
        key = cache_key(claimed.key_id, claimed.model, request)
        hit = self.cache.get(key)
        CACHE_LOOKUPS.labels(claimed.model, "miss" if hit is None else "hit").inc()
        if hit is not None:
            if hit["text"]:
                writer.delta(hit["text"])
            return Outcome("succeeded", **{name: hit[name] for name in _KEPT}, cached=True)
        outcome = self.inner(claimed, writer, stop)
        if outcome.status == "succeeded" and outcome.text is not None:
            self.cache.put(key, outcome)
        return outcome
