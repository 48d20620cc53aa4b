"""Every error leaves the API as RFC 9457 `application/problem+json`."""

from __future__ import annotations

import logging
import re
from typing import Any

import redis
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from inferq.errors import (
    InferqError,
    InvalidRequest,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    StoreUnavailable,
    UnknownModel,
)

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
# What an `Allow` header may list.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


OPENAI_ROUTES = ("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/files", "/v1/batches")
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(error: InferqError) -> tuple[int, dict[str, Any]]:
    """The status and body OpenAI's SDKs expect for this error.

    OpenAI answers 400 for every invalid parameter and 404 for an unknown model, and the
    SDKs pick their exception class by status, so 422s become 400s here.
    """
    status = 404 if isinstance(error, UnknownModel) else error.status
    if status == 422:
        status = 400
    errors = error.extra.get("errors") or [{}]
    loc = [str(p) for p in errors[0].get("loc", []) if p != "body"]
    body = {
        "error": {
            "message": error.detail,
            "type": _OPENAI_TYPES.get(
                status, "api_error" if status >= 500 else "invalid_request_error"
            ),
            "param": ".".join(loc) or None,
            "code": error.slug.replace("-", "_"),
        }
    }
    for name, value in error.extra.items():
        if name != "errors":
            body["error"][name] = value
    return status, body


def problem_response(error: InferqError, request: Request) -> JSONResponse:
    headers = dict(error.headers)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if request.url.path.startswith(OPENAI_ROUTES):
        status, body = openai_error(error)
        return JSONResponse(body, status_code=status, headers=headers)
    return JSONResponse(
        error.problem(instance=request.url.path),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Echo where and why, not the input: it may be large or sensitive.
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]


async def _on_inferq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InferqError)
    return problem_response(exc, request)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(MalformedBody("the body is not valid JSON"), request)
    if any(e["type"] == "model_attributes_type" and e["loc"] == ["body"] for e in errors):
        return problem_response(MalformedBody("the body must be a JSON object"), request)
    # Each field with its reason, once (a union's members may each give the same one).
    reasons = dict.fromkeys(f"{_field(e['loc'])} ({e['msg']})" for e in errors)
    detail = f"invalid fields: {'; '.join(reasons)}"
    return problem_response(InvalidRequest(detail, errors=errors), request)


def _field(loc: list[str | int]) -> str:
    return ".".join(str(part) for part in loc[1:]) or "body"


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error: InferqError
    if exc.status_code == 404:
        error = NotFound(f"no route {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    else:
        error = InferqError(str(exc.detail))
        error.status = exc.status_code  # type: ignore[misc]
    response = problem_response(error, request)
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        # RFC 9110 asks a 405 to list the methods the resource takes. Starlette's own
        # `Allow` names only the first route of the path, here one per method.
        response.headers["Allow"] = ", ".join(_allowed(request))
    return response


def _allowed(request: Request) -> list[str]:
    """The methods some route takes at the request's path: each asked of the routes in
    turn (FastAPI keeps included routers as routes of their own)."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def _on_store_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("backing store unreachable: %s: %s", type(exc).__name__, exc)
    return problem_response(
        StoreUnavailable(f"{type(exc).__name__}: the store is unreachable"), request
    )


# Replies with which a Redis server refuses work it would do in another state: full
# (OOM), a read-only replica, no replicas to write to, protected mode (DENIED), a failed
# snapshot (MISCONF), a busy script, a cluster in transition. The service is unavailable
# then, not broken: 503 like an unreachable Redis. redis-py gives some their own class
# (and drops the code from the message); the others keep the code as the first word, or
# after a dash inside a script's error ("@user_script:4: -OOM command not allowed ...").
REDIS_REFUSALS = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
REDIS_REFUSAL_REPLY = re.compile(
    r"(?:^|-)(?:OOM|READONLY|NOREPLICAS|MASTERDOWN|DENIED|MISCONF|BUSY|TRYAGAIN|CLUSTERDOWN) "
)


def redis_refuses(exc: Exception) -> bool:
    """Whether a Redis error reply says the server refuses for now (see above)."""
    return isinstance(exc, REDIS_REFUSALS) or bool(REDIS_REFUSAL_REPLY.search(str(exc)))


async def _on_redis_reply_error(request: Request, exc: Exception) -> JSONResponse:
    if not redis_refuses(exc):
        return await _on_unexpected(request, exc)
    log.warning("backing store refuses: %s: %s", type(exc).__name__, exc)
    return problem_response(
        StoreUnavailable(f"{type(exc).__name__}: the store refuses requests"), request
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(InferqError("an unexpected error occurred"), request)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""
    app.add_exception_handler(InferqError, _on_inferq_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for store_error in (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        redis.ConnectionError,
        redis.TimeoutError,
        ConnectionError,
        TimeoutError,
    ):
        app.add_exception_handler(store_error, _on_store_error)
    app.add_exception_handler(redis.ResponseError, _on_redis_reply_error)
    app.add_exception_handler(Exception, _on_unexpected)
