"""HTTP routes, one module per resource; `router` wires them."""

from fastapi import APIRouter

from inferq.api import admin, completions, events, health, jobs, models

router = APIRouter()
router.include_router(health.router)
router.include_router(models.router)
router.include_router(jobs.router)
router.include_router(events.router)
router.include_router(completions.router)
router.include_router(admin.router)
