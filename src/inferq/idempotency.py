"""`Idempotency-Key`: a retried request gets the first one's answer, not a second job.

Same key and same body within the TTL → the stored response, replayed. Same key with
another body → 422. A second request while the first is still being accepted → 409.
The pending marker expires quickly, so a request that died mid-way frees its key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from inferq import redis_keys
from inferq.errors import Conflict, InvalidRequest


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class Idempotency:
    def __init__(
        self, client: aioredis.Redis, ttl_seconds: int = 86_400, pending_seconds: int = 60
    ) -> None:
        self.client = client
        self.ttl = ttl_seconds
        # Longer than the slowest request it guards (a synchronous completion waits).
        self.pending_seconds = pending_seconds

    async def run(
        self,
        key_id: str,
        idempotency_key: str,
        body: bytes,
        produce: Callable[[], Awaitable[Answer]],
    ) -> Answer:
        """The stored answer for this key and body, or `produce()`'s, stored for next time."""
        slot = redis_keys.idempotency(key_id, idempotency_key)
        digest = fingerprint(body)
        pending = orjson.dumps({"state": "pending", "hash": digest})
        if not await self.client.set(slot, pending, nx=True, ex=self.pending_seconds):
            return await self._replay(slot, digest)
        try:
            answer = await produce()
        except BaseException:
            await self.client.delete(slot)  # a failed attempt must not block the retry
            raise
        done = {
            "state": "done",
            "hash": digest,
            "status": answer.status,
            "body": answer.body,
            "headers": answer.headers,
        }
        await self.client.set(slot, orjson.dumps(done), ex=self.ttl)
        return answer

    async def _replay(self, slot: str, digest: str) -> Answer:
        raw = await self.client.get(slot)
        if raw is None:
            raise Conflict("a request with this Idempotency-Key just finished; retry it")
        stored = orjson.loads(raw)
        if stored["hash"] != digest:
            raise InvalidRequest("this Idempotency-Key was used with a different body")
        if stored["state"] == "pending":
            raise Conflict("a request with this Idempotency-Key is still being accepted")
        headers = {**stored["headers"], "Idempotent-Replayed": "true"}
        return Answer(stored["status"], stored["body"], headers)
