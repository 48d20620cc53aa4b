"""`Annotated` dependency aliases that keep routes short."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request

from inferq.errors import Forbidden, Unauthorized, UnsupportedMediaType
from inferq.keys import Caller

if TYPE_CHECKING:
    from inferq.app import Services


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, a hand-off that cost more than the function itself.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated["Services", Depends(get_services)]


async def current_caller(request: Request, services: ServicesDep) -> Caller:
    """The caller, from `Authorization: Bearer <key>`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send `Authorization: Bearer <key>`")
    caller = await services.keys.authenticate(token.strip())
    if caller is None:
        raise Unauthorized("the API key is unknown or revoked")
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]


async def current_key(caller: CurrentCaller) -> str:
    """The id of the caller's API key."""
    return caller.key_id


CurrentKey = Annotated[str, Depends(current_key)]


async def admin_caller(caller: CurrentCaller) -> Caller:
    if not caller.admin:
        raise Forbidden("this route needs an admin key (`inferq keys create --admin`)")
    return caller


AdminCaller = Annotated[Caller, Depends(admin_caller)]


async def require_json(request: Request) -> None:
    """Bodies must be JSON; anything else is 415 rather than a confusing 422."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"expected application/json, got {media_type!r}")


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=255, description="Retry-safe submission key."),
]
