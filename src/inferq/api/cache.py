"""Empty a key's response cache (its entries are made by the jobs that ask for one)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from inferq import redis_keys
from inferq.api.deps import CurrentKey, ServicesDep

router = APIRouter(prefix="/v1/cache", tags=["cache"])


class Purged(BaseModel):
    # Redis keys removed: each exact answer is one, each semantic index (a model and
    # set of parameters) one more.
    deleted_entries: int


@router.delete("")
async def purge_cache(key_id: CurrentKey, services: ServicesDep) -> Purged:
    """Forget every cached answer of this key: the next request of each runs again.
    Other keys' entries are untouched."""
    deleted = 0
    for pattern in redis_keys.response_cache_patterns(key_id):
        batch: list[bytes] = []
        async for name in services.redis.scan_iter(match=pattern, count=500):
            batch.append(name)
            if len(batch) == 500:
                deleted += await services.redis.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await services.redis.unlink(*batch)
    return Purged(deleted_entries=deleted)
