"""`GET /v1/usage`: a key's tokens and cost over time, by model or by day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from inferq.api.deps import CurrentCaller, ServicesDep
from inferq.api.openapi import errors
from inferq.errors import Forbidden, InvalidRequest
from inferq.jobs.usage import GroupBy, usage

router = APIRouter(prefix="/v1", tags=["usage"])
DEFAULT_SPAN = timedelta(days=30)


class UsageTotals(BaseModel):
    jobs: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class UsageGroup(UsageTotals):
    # The model (that served the jobs) or the day (YYYY-MM-DD, UTC), per `group_by`.
    key: str


class UsageReport(BaseModel):
    key_id: str
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    group_by: GroupBy
    data: list[UsageGroup]
    total: UsageTotals


@router.get("/usage", responses=errors(403))
async def get_usage(
    caller: CurrentCaller,
    services: ServicesDep,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    group_by: GroupBy = "model",
    key_id: Annotated[str | None, Query(description="Another key's id (admin keys)")] = None,
) -> UsageReport:
    """Jobs finished in [from, to) (default: the last 30 days), their tokens and cost."""
    if key_id is not None and key_id != caller.key_id and not caller.admin:
        raise Forbidden("only an admin key may read another key's usage")
    end = _utc(end) if end else datetime.now(UTC)
    start = _utc(start) if start else end - DEFAULT_SPAN
    if start >= end:
        raise InvalidRequest("`from` must be before `to`")
    owner = key_id or caller.key_id
    rows = await usage(services.engine, owner, start, end, group_by)
    data = [
        UsageGroup(
            key=r.group,
            jobs=r.jobs,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            cost_usd=r.cost_usd,
        )
        for r in rows
    ]
    total = UsageTotals(
        jobs=sum(g.jobs for g in data),
        prompt_tokens=sum(g.prompt_tokens for g in data),
        completion_tokens=sum(g.completion_tokens for g in data),
        cost_usd=sum(g.cost_usd for g in data),
    )
    return UsageReport(
        key_id=owner, start=start, end=end, group_by=group_by, data=data, total=total
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
