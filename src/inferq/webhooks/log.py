"""A job's webhook deliveries and their attempts, as `GET /v1/jobs/{id}/webhook` shows them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.db.tables import webhook_attempts, webhook_deliveries


class AttemptView(BaseModel):
    attempt: int
    started_at: datetime
    # The receiver's status, or why there was none (timeout, refused address, ...).
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryView(BaseModel):
    """One event of the job; `id` is the `webhook-id` header it is sent with."""

    id: str
    url: str
    # waiting (the job has not ended) | pending | delivered | failed
    status: str
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptView]


class DeliveryLog(BaseModel):
    data: list[DeliveryView]


async def delivery_log(engine: AsyncEngine, job_id: str) -> DeliveryLog:
    d, a = webhook_deliveries.c, webhook_attempts.c
    deliveries = sa.select(webhook_deliveries).where(d.job_id == job_id).order_by(d.created_at)
    attempts = (
        sa.select(webhook_attempts)
        .join(webhook_deliveries, d.id == a.delivery_id)
        .where(d.job_id == job_id)
        .order_by(a.delivery_id, a.attempt)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(deliveries)).all()
        attempt_rows = (await conn.execute(attempts)).all()
    by_delivery: dict[str, list[AttemptView]] = {}
    for row in attempt_rows:
        by_delivery.setdefault(row.delivery_id, []).append(AttemptView.model_validate(row._mapping))
    views = [
        DeliveryView.model_validate({**row._mapping, "attempts": by_delivery.get(row.id, [])})
        for row in rows
    ]
    return DeliveryLog(data=views)
