"""The OpenAPI document says what the API answers: every error a client can provoke is
listed for its operation, with the media type and body it really has."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import Service, wait_for


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}


def _text() -> dict[str, str]:
    return {"content-type": "text/plain"}


def _idem() -> dict[str, str]:
    return {"Idempotency-Key": "k" * 256}


CHAT = {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}


def case(name: str, method: str, path: str, status: int, key: str = "key", **options: Any) -> Any:
    """A request provoking `status`, sent with one of `keys`."""
    return pytest.param(method, path, options, key, status, id=name)


COMPLETION = {"model": "x", "prompt": "hi"}
FAILING = {**CHAT, "model": "sim-fail"}
ERRORS = [
    case("no key", "GET", "/v1/jobs", 401, key="none"),
    case("unknown key", "GET", "/v1/models", 401, key="bogus"),
    case("no such job", "GET", "/v1/jobs/job-nope", 404),
    case("events of no job", "GET", "/v1/jobs/job-nope/events", 404),
    case("invalid job", "POST", "/v1/jobs", 422, json={"model": "sim"}),
    case("body not JSON", "POST", "/v1/jobs", 400, content=b"{", headers=_json()),
    case("body as text", "POST", "/v1/jobs", 415, content=b"hi", headers=_text()),
    case("body too large", "POST", "/v1/jobs", 413, content=b"x" * 1_100_000, headers=_json()),
    case("bad cursor", "GET", "/v1/conversations", 422, params={"cursor": "x"}),
    case("idempotency key too long", "POST", "/v1/jobs", 422, json=CHAT, headers=_idem()),
    case("admin route", "GET", "/v1/admin/breakers", 403, key="plain"),
    case("rate limited", "POST", "/v1/jobs", 429, key="rpm1", json=CHAT),
    case("OpenAI: no key", "POST", "/v1/chat/completions", 401, key="none", json=CHAT),
    case("OpenAI: unknown model", "POST", "/v1/completions", 404, json=COMPLETION),
    case("OpenAI: bad parameter", "POST", "/v1/chat/completions", 400, json={**CHAT, "n": 0}),
    case("OpenAI: job failed", "POST", "/v1/chat/completions", 502, json=FAILING),
    case("OpenAI: no such file", "GET", "/v1/files/file-nope", 404),
    case("OpenAI: no such batch", "POST", "/v1/batches/batch_nope/cancel", 404),
    case("OpenAI: embeddings without input", "POST", "/v1/embeddings", 400, json={"model": "sim"}),
]


@pytest.fixture(scope="module")
def document(service: Service) -> dict[str, Any]:
    response = httpx.get(service.url + "/openapi.json")
    response.raise_for_status()
    return dict(response.json())


@pytest.fixture(scope="module")
def keys(service: Service) -> dict[str, str | None]:
    return {
        "key": service.key,
        "none": None,
        "bogus": "iq_not-a-key",
        "plain": service.create_key(),
        "rpm1": service.create_key("--rpm", "1"),
    }


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, operations in document["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        if re.fullmatch(pattern, path) and method.lower() in operations:
            return dict(operations[method.lower()])
    raise AssertionError(f"{method} {path} is not in the document")


def _check_documented(
    document: dict[str, Any], method: str, path: str, response: httpx.Response
) -> None:
    """The response's status is documented for its operation, with its media type, and
    its body is valid against the documented schema."""
    documented = _operation(document, method, path)["responses"]
    assert str(response.status_code) in documented, (method, path, response.status_code)
    content = documented[str(response.status_code)]["content"]
    media = response.headers["content-type"].split(";")[0]
    assert media in content, (media, list(content))
    schema = {**content[media]["schema"], "components": document["components"]}
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(response.json())]
    assert errors == [], errors


@pytest.mark.parametrize(("method", "path", "options", "key", "status"), ERRORS)
def test_every_error_is_documented_with_the_body_it_has(
    service: Service,
    document: dict[str, Any],
    keys: dict[str, str | None],
    method: str,
    path: str,
    options: dict[str, Any],
    key: str,
    status: int,
) -> None:
    options = dict(options)  # shared by the parametrizations of both stores
    headers = dict(options.pop("headers", {}))
    if keys[key]:
        headers["Authorization"] = f"Bearer {keys[key]}"
    with httpx.Client(base_url=service.url, timeout=30) as client:
        response = client.request(method, path, headers=headers, **options)
        if key == "rpm1" and response.status_code != 429:
            response = client.request(method, path, headers=headers, **options)
    assert response.status_code == status, response.text
    _check_documented(document, method, path, response)


def test_a_conflict_is_documented(service: Service, document: dict[str, Any]) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=CHAT).json()
        wait_for(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded")
        response = client.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 409, response.text
    _check_documented(document, "DELETE", f"/v1/jobs/{job['id']}", response)


def test_the_document_names_the_key_and_no_shape_the_api_never_sends(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["APIKey"] == {**schemes["APIKey"], "type": "http", "scheme": "bearer"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            keyed = path.startswith("/v1/")
            assert bool(operation.get("security")) == keyed, (method, path)
            assert ("401" in operation["responses"]) == keyed, (method, path)
    assert "HTTPValidationError" not in str(document)
    submit = document["paths"]["/v1/jobs"]["post"]["responses"]
    assert "Retry-After" in submit["429"]["headers"]
    assert "WWW-Authenticate" in submit["401"]["headers"]


def test_a_404_is_documented_where_a_path_names_what_may_not_exist(
    document: dict[str, Any],
) -> None:
    # Adding documents to a collection creates it: that route never answers 404.
    creating = ("post", "/v1/collections/{collection}/documents")
    assert creating[0] in document["paths"][creating[1]]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "{" in path:
                expected = (method, path) != creating
                assert ("404" in operation["responses"]) == expected, (method, path)
    assert "x-inferq-creates" not in str(document)


def test_every_route_the_document_says_takes_a_key_refuses_a_request_without_one(
    service: Service, document: dict[str, Any]
) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for template, operations in document["paths"].items():
            path = re.sub(r"\{[^}]+\}", "x", template)
            for method, operation in operations.items():
                response = client.request(method.upper(), path)
                keyed = bool(operation.get("security"))
                assert (response.status_code == 401) == keyed, (method, path, response.text)
