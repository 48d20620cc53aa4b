"""`Annotated` dependency aliases that keep routes short."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from inferq.errors import Unauthorized, UnsupportedMediaType

if TYPE_CHECKING:
    from inferq.app import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated["Services", Depends(get_services)]


async def current_key(request: Request, services: ServicesDep) -> str:
    """The id of the caller's API key, from `Authorization: Bearer <key>`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send `Authorization: Bearer <key>`")
    key_id = await services.keys.authenticate(token.strip())
    if key_id is None:
        raise Unauthorized("the API key is unknown or revoked")
    return key_id


CurrentKey = Annotated[str, Depends(current_key)]


def require_json(request: Request) -> None:
    """Bodies must be JSON; anything else is 415 rather than a confusing 422."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"expected application/json, got {media_type!r}")
