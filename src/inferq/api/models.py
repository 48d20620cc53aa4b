"""`GET /v1/models`: the registry's public model names."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from inferq.api.deps import CurrentKey, ServicesDep

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
async def list_models(_key: CurrentKey, services: ServicesDep) -> dict[str, Any]:
    """Models this service serves (OpenAI's list shape, plus provider and pool)."""
    return {
        "object": "list",
        "data": [
            {
                "id": spec.name,
                "object": "model",
                "owned_by": "inferq",
                "provider": spec.provider,
                "pool": spec.pool,
                "description": spec.description,
            }
            for spec in services.registry.specs()
        ],
    }
