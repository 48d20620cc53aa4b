"""Liveness and readiness, without authentication."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from inferq.api.deps import ServicesDep
from inferq.api.openapi import errors
from inferq.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
async def readyz(services: ServicesDep) -> dict[str, str]:
    """Redis and the database answer; 503 otherwise."""
    checks = {"database": services.jobs.ping(), "redis": services.redis.ping()}
    failed = []
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, timeout=1.0)
        except Exception:
            failed.append(name)
    if failed:
        raise StoreUnavailable(f"unreachable: {', '.join(failed)}", checks=failed)
    return {"status": "ready"}
