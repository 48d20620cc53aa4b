"""The response cache: a chat or completion job answered from an earlier one.

A job opts in with `cache: "exact"` or `"semantic"`. An entry's name is a hash of what
decides the answer (the model, the messages or prompt, every sampling parameter) under
the API key that asked, so one key's prompts and answers never reach another key. A hit
is a succeeded job with the stored text, `cached: true` and no cost, and no provider
call; a miss runs the job and keeps its success for `INFERQ_CACHE_TTL_SECONDS`.

"semantic" also takes an answer whose prompt means nearly the same: the prompt's vector
(the registry's embedding model, through the worker's embedding batcher) against those
of the key's cached prompts for the same model and parameters, at cosine similarity
`INFERQ_SEMANTIC_CACHE_THRESHOLD` or more. The vectors sit in one Redis hash per key,
model and parameters, at most `INFERQ_SEMANTIC_CACHE_ENTRIES` of them, compared in the
worker: a lookup reads them all (1.5 kB each for all-MiniLM), which bounds the size that
makes sense; a vector index (Redis Stack, pgvector) would be the way past it.

It wraps the generate handler in the worker, so a hit is a job like any other: a row, an
event stream, a webhook. A Redis or an embedding model that fails makes a miss, never a
failed job.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import redis

from inferq import redis_keys
from inferq.config import Settings
from inferq.failure_log import FailureLog
from inferq.jobs.claims import ClaimedJob, Outcome
from inferq.liveness import StopSignal
from inferq.observability.metrics import CACHE_LOOKUPS
from inferq.providers.request import GenerationRequest
from inferq.streams import StreamWriter

log = logging.getLogger(__name__)

Handler = Callable[[ClaimedJob, StreamWriter, StopSignal], Outcome]
# The request's fields that do not change the answer.
_NOT_IN_KEY = frozenset({"stream", "cache", "conversation"})
# What a semantic match may differ in.
_TEXT = frozenset({"messages", "prompt"})
_KEPT = ("text", "finish_reason", "prompt_tokens", "completion_tokens", "served_model")
Embed = Callable[[str], list[float]]


def _digest(model: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps([model, fields], option=orjson.OPT_SORT_KEYS)).hexdigest()


def request_digest(model: str, request: GenerationRequest) -> str:
    """Names the answer of this exact request."""
    return _digest(model, {k: v for k, v in vars(request).items() if k not in _NOT_IN_KEY})


def index_key(key_id: str | None, model: str, request: GenerationRequest) -> str:
    """The semantic index of requests that differ from this one in their text alone."""
    same = {k: v for k, v in vars(request).items() if k not in _NOT_IN_KEY | _TEXT}
    return redis_keys.semantic_index(key_id or "-", _digest(model, same))


def prompt_text(request: GenerationRequest) -> str:
    """What the semantic cache compares: the conversation as text, or the prompt."""
    if request.messages is None:
        return request.prompt or ""
    return "\n".join(f"{m['role']}: {m['content']}" for m in request.messages)


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

    def nearest(self, index: str, vector: np.ndarray, threshold: float) -> tuple[str, float] | None:
        """The index's cached prompt most like `vector` (unit length), if alike enough:
        the name of its answer and the similarity."""
        try:
            entries: dict[bytes, bytes] = self.client.hgetall(index)  # type: ignore[assignment]
        except redis.RedisError as exc:
            self._failures.failed(exc)
            return None
        if not entries:
            return None
        names = list(entries)
        matrix = np.frombuffer(b"".join(entries[n] for n in names), dtype=np.float32)
        try:
            similarities = matrix.reshape(len(names), -1) @ vector
        except ValueError:  # vectors of another size: the embedding model was changed
            return None
        best = int(np.argmax(similarities))
        if similarities[best] < threshold:
            return None
        return names[best].decode(), float(similarities[best])

    def index(self, index: str, name: str, vector: np.ndarray, most: int) -> None:
        """Add a cached prompt's vector; past `most`, one entry at random makes room."""
        try:
            if self.client.hlen(index) >= most:
                victim = self.client.hrandfield(index)
                if victim is not None:
                    self.client.hdel(index, victim)  # type: ignore[arg-type]
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hset(index, name, vector.astype(np.float32).tobytes())
                pipe.expire(index, self.ttl_seconds)
                pipe.execute()
        except redis.RedisError as exc:
            self._failures.failed(exc)

    def forget(self, index: str, name: str) -> None:
        """An indexed prompt whose answer expired."""
        try:
            self.client.hdel(index, name)
        except redis.RedisError as exc:
            self._failures.failed(exc)


class CachingHandler:
    """Answers a job that asked for the cache from it, else asks `inner` and keeps its
    success. Other jobs go straight to `inner`."""

    def __init__(
        self,
        inner: Handler,
        cache: ResponseCache,
        embed: Embed | None = None,
        threshold: float = 0.95,
        most: int = 500,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.embed = embed
        self.threshold = threshold
        self.most = most
        self._embed_failures = FailureLog(log, "semantic cache (embedding); exact only")

    def __call__(self, claimed: ClaimedJob, writer: StreamWriter, stop: StopSignal) -> Outcome:
        request = claimed.request
        if request.cache not in ("exact", "semantic"):
            return self.inner(claimed, writer, stop)
        digest = request_digest(claimed.model, request)
        key_id = claimed.key_id or "-"
        hit = self.cache.get(redis_keys.response_cache(key_id, digest))
        index = index_key(claimed.key_id, claimed.model, request)
        vector = None
        if hit is None and request.cache == "semantic":
            vector = self._vector(request)
            hit = self._nearest(key_id, index, vector)
        CACHE_LOOKUPS.labels(claimed.model, "miss" if hit is None else "hit").inc()
        if hit is not None:
            if hit["text"]:
                writer.delta(hit["text"])
            return Outcome("succeeded", **{name: hit[name] for name in _KEPT}, cached=True)
        outcome = self.inner(claimed, writer, stop)
        if outcome.status == "succeeded" and outcome.text is not None:
            self.cache.put(redis_keys.response_cache(key_id, digest), outcome)
            if vector is not None:
                self.cache.index(index, digest, vector, self.most)
        return outcome

    def _vector(self, request: GenerationRequest) -> np.ndarray | None:
        if self.embed is None:
            return None
        try:
            vector = np.asarray(self.embed(prompt_text(request)), dtype=np.float32)
        except Exception as exc:
            self._embed_failures.failed(exc)
            return None
        self._embed_failures.worked()
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else None

    def _nearest(self, key_id: str, index: str, vector: np.ndarray | None) -> dict[str, Any] | None:
        if vector is None:
            return None
        found = self.cache.nearest(index, vector, self.threshold)
        if found is None:
            return None
        name, similarity = found
        hit = self.cache.get(redis_keys.response_cache(key_id, name))
        if hit is None:
            self.cache.forget(index, name)
            return None
        log.info("semantic cache: answered from a prompt %.3f alike", similarity)
        return hit


def caching(
    settings: Settings,
    client: redis.Redis,
    inner: Handler,
    vector: Callable[[str, str], list[float]],
) -> CachingHandler:
    """The worker's cache in front of `inner`; semantic when a model is named, whose
    vectors `vector(model, text)` gives."""
    name = settings.semantic_cache_model
    return CachingHandler(
        inner,
        ResponseCache(client, settings.cache_ttl_seconds),
        embed=(lambda text: vector(name, text)) if name else None,
        threshold=settings.semantic_cache_threshold,
        most=settings.semantic_cache_entries,
    )
