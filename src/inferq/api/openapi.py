"""The OpenAPI document names the errors each route answers, with the bodies they have.

FastAPI documents a 422 of its own shape (`HTTPValidationError`) that inferq never sends:
every error leaves as `application/problem+json` (RFC 9457), or as OpenAI's error object
on the OpenAI routes (`problems.openai_error`). The statuses any route of a kind can
answer are read off its operation here: a key, which every /v1 route takes (401, and 503
for the stores the key is looked up in), a path parameter (404, unless the route creates
what it names), parameters or a body (422, 400 on the OpenAI routes), a body (400
malformed, 413). What only a handler knows (a 409, a 429, a 502) its route declares with
`errors(...)`, given the same body here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from inferq.api.problems import OPENAI_ROUTES, PROBLEM_JSON

WHY = {
    400: "The body is not JSON, or not an object",
    401: "No API key, or an unknown or revoked one",
    403: "The key may not do this",
    404: "No such resource for this key",
    409: "The request conflicts with the resource's state",
    413: "The body is larger than the service accepts",
    415: "The body must be JSON",
    422: "A field is invalid (`errors` says which and why)",
    429: "A limit of the key was reached; retry after `Retry-After` seconds",
    502: "The job failed (the provider's error, or every fallback's)",
    503: "A store or the queue is unreachable, or the queue is full; retry later",
    504: "The job is still running after the wait; poll `GET /v1/jobs/{id}`",
}
# OpenAI's SDKs pick their exception by status: every invalid request is a 400 there.
OPENAI_WHY = {
    **WHY,
    400: "A parameter is invalid, or the body is not JSON",
    404: "No such model, file or batch",
}
KEY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An inferq API key (`inferq keys create`): `Authorization: Bearer iq_...`",
}
# `openapi_extra=CREATES` on a route whose path parameter names what it creates: no 404
# for it (the mark is taken off the document).
_CREATES_MARK = "x-inferq-creates"
CREATES = {_CREATES_MARK: True}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An error, as RFC 9457 describes it."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="A URI naming the kind of error")
    title: str
    status: int
    detail: str = Field(description="What went wrong with this request")
    instance: str | None = Field(None, description="The path of the request")
    errors: list[ValidationIssue] | None = Field(None, description="Each invalid field (422)")


class OpenAIErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """An error on the OpenAI routes, in the shape OpenAI's SDKs read."""

    model_config = ConfigDict(title="OpenAIError")

    error: OpenAIErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error statuses only its handler knows it answers
    (described here as on any route; `install` gives each its body)."""
    return {status: {"description": WHY[status]} for status in statuses}


def install(app: FastAPI) -> None:
    """Document every route's errors the first time the document is asked for."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_errors(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    # Every /v1 route takes a key. Declared here rather than with FastAPI's HTTPBearer as
    # a dependency, which documents it by itself but cost 25 us of every request's CPU
    # (4 % of a submit): `deps.current_caller` reads the header itself.
    components["securitySchemes"] = {"APIKey": KEY_SCHEME}
    schemas = components.setdefault("schemas", {})
    for model in (Problem, OpenAIError):
        defs = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(defs.pop("$defs", {}))
        schemas[model.__name__] = defs
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            if path.startswith("/v1/"):
                operation["security"] = [{"APIKey": []}]
            _document(path, operation)
    if "HTTPValidationError" not in str(document["paths"]):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _document(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's own shape, never sent
    openai = path.startswith(OPENAI_ROUTES)
    creates = bool(operation.pop(_CREATES_MARK, False))
    for status in _statuses(operation, openai, creates) | _declared(responses):
        media, schema = ("application/json", "OpenAIError") if openai else (PROBLEM_JSON, "Problem")
        response: dict[str, Any] = {
            "description": (OPENAI_WHY if openai else WHY)[status],
            "content": {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
        if status in HEADERS:
            response["headers"] = HEADERS[status]
        responses[str(status)] = response


def _statuses(operation: dict[str, Any], openai: bool, creates: bool) -> set[int]:
    parameters = operation.get("parameters", [])
    body = "requestBody" in operation
    found = set()
    if operation.get("security"):
        found |= {401, 503}
    if not creates and any(p["in"] == "path" for p in parameters):
        found.add(404)
    if parameters or body:
        found.add(400 if openai else 422)
    if body:
        found |= {400, 413}
    return found


def _declared(responses: dict[str, Any]) -> set[int]:
    return {int(code) for code in responses if code.isdigit() and int(code) >= 400}
