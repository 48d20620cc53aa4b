"""HTTP routes, one module per resource; `router` wires them."""

from fastapi import APIRouter

from inferq.api import (
    admin,
    batches,
    cache,
    collections,
    completions,
    conversations,
    embeddings,
    events,
    files,
    health,
    jobs,
    metrics,
    models,
    usage,
    webhooks,
)

router = APIRouter()
router.include_router(health.router)
router.include_router(models.router)
router.include_router(jobs.router)
router.include_router(events.router)
router.include_router(completions.router)
router.include_router(conversations.router)
router.include_router(cache.router)
router.include_router(collections.router)
router.include_router(embeddings.router)
router.include_router(files.router)
router.include_router(batches.router)
router.include_router(webhooks.router)
router.include_router(usage.router)
router.include_router(admin.router)
router.include_router(metrics.router)
