"""Service-wide state for operators (admin keys only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from inferq.api.deps import AdminCaller, ServicesDep
from inferq.api.openapi import errors
from inferq.resilience.breaker import all_states

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=errors(403))


@router.get("/breakers")
async def breakers(_admin: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """The circuit breaker of every provider endpoint that has seen traffic."""
    return {"data": await all_states(services.redis)}
