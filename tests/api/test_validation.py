"""Bad input answers a 4xx problem document, never a 5xx."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Service

GOOD: dict[str, Any] = {"model": "sim", "prompt": "hi"}

BAD_BODIES: list[tuple[str, Any, int]] = [
    ("unknown model", {"model": "no-such-model", "prompt": "hi"}, 422),
    ("missing model", {"prompt": "hi"}, 422),
    ("neither prompt nor messages", {"model": "sim"}, 422),
    ("both prompt and messages", {**GOOD, "messages": [{"role": "user", "content": "x"}]}, 422),
    ("empty messages", {"model": "sim", "messages": []}, 422),
    ("unknown role", {"model": "sim", "messages": [{"role": "wizard", "content": "x"}]}, 422),
    ("unknown field", {**GOOD, "temprature": 0.5}, 422),
    ("max_tokens zero", {**GOOD, "max_tokens": 0}, 422),
    ("max_tokens over the cap", {**GOOD, "max_tokens": 1_000_000}, 422),
    ("temperature out of range", {**GOOD, "temperature": 7}, 422),
    ("top_p zero", {**GOOD, "top_p": 0}, 422),
    ("bad priority", {**GOOD, "priority": "urgent"}, 422),
    ("prompt too long", {"model": "sim", "prompt": "x" * 200_001}, 422),
    (
        "too many messages",
        {"model": "sim", "messages": [{"role": "user", "content": "x"}] * 257},
        422,
    ),
    (
        "message too long",
        {"model": "sim", "messages": [{"role": "user", "content": "y" * 100_001}]},
        422,
    ),
    ("too many stop sequences", {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 422),
    ("metadata not strings", {**GOOD, "metadata": {"n": {"nested": 1}}}, 422),
    ("body is a list", [GOOD], 400),
    ("prompt is a number", {"model": "sim", "prompt": 12}, 422),
    ("NUL in the prompt", {"model": "sim", "prompt": "a\u0000b"}, 422),
    (
        "NUL in a message",
        {"model": "sim", "messages": [{"role": "user", "content": "\u0000"}]},
        422,
    ),
]


@pytest.mark.parametrize(("case", "body", "status"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_job_body_is_a_problem_document(
    service: Service, case: str, body: Any, status: int
) -> None:
    with service.client() as client:
        response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert problem["type"].startswith("https://")


def test_malformed_json_is_400(service: Service) -> None:
    with service.client() as client:
        response = client.post(
            "/v1/jobs", content=b'{"model": "sim",', headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["type"].endswith("malformed-body")


def test_non_json_body_is_415(service: Service) -> None:
    with service.client() as client:
        response = client.post(
            "/v1/jobs", content=b"model=sim", headers={"content-type": "text/plain"}
        )
    assert response.status_code == 415


def test_body_over_the_size_limit_is_413(service: Service) -> None:
    with service.client() as client:
        response = client.post("/v1/jobs", json={"model": "sim", "prompt": "x" * 1_100_000})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_missing_or_wrong_key_is_401(service: Service) -> None:
    with service.client("iq_not_a_key") as client:
        assert client.get("/v1/jobs").status_code == 401
    with service.client() as client:
        response = client.get("/v1/jobs", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_job_and_route_are_404_and_wrong_method_405(service: Service) -> None:
    with service.client() as client:
        assert client.get("/v1/jobs/does-not-exist").status_code == 404
        assert client.get("/v1/nothing-here").status_code == 404
        response = client.put("/v1/jobs", json=GOOD)
        readyz = client.request("TRACE", "/readyz")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    # RFC 9110: a 405 says which methods the resource takes.
    assert response.headers["allow"] == "GET, POST"
    assert (readyz.status_code, readyz.headers["allow"]) == (405, "GET")


def test_bad_list_parameters_are_422(service: Service) -> None:
    with service.client() as client:
        assert client.get("/v1/jobs", params={"limit": 1000}).status_code == 422
        assert client.get("/v1/jobs", params={"status": "sleeping"}).status_code == 422
        assert client.get("/v1/jobs", params={"cursor": "garbage!"}).status_code == 422


def test_bad_last_event_id_is_422(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=GOOD).json()
        response = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "nope"})
    assert response.status_code == 422


def test_health_needs_no_key_and_readiness_checks_stores(service: Service) -> None:
    import httpx

    assert httpx.get(service.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(service.url + "/readyz").status_code == 200
    assert httpx.get(service.url + "/docs").status_code == 200


def test_models_lists_the_registry(service: Service) -> None:
    with service.client() as client:
        models = client.get("/v1/models").json()
    names = {m["id"] for m in models["data"]}
    assert {"gemma-3-270m", "sim"} <= names


def test_nul_characters_are_refused_on_every_route_that_keeps_text(service: Service) -> None:
    """PostgreSQL keeps no NUL in text: refused on both stores before a job exists."""
    nul = [{"role": "user", "content": "before\u0000after"}]
    with service.client(service.create_key()) as client:
        chat = client.post("/v1/chat/completions", json={"model": "sim", "messages": nul})
        document = client.post(
            "/v1/collections/c/documents", json={"documents": [{"text": "a\u0000b"}]}
        )
        listed = client.get("/v1/jobs").json()["data"]
    assert chat.status_code == 400, chat.text
    assert "NUL" in chat.json()["error"]["message"]
    assert document.status_code == 422 and "NUL" in document.json()["detail"]
    assert listed == []  # no job was made


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/v1/files?after=%00%5E&order=asc&purpose=%00%5E", 400),  # found by fuzzing
        ("GET", "/v1/files/file-%00", 400),
        ("GET", "/v1/batches?after=batch_%00", 400),
        ("GET", "/v1/jobs/%00", 422),
        ("DELETE", "/v1/jobs/a%00b", 422),
        ("GET", "/v1/jobs?cursor=%00", 422),
        ("GET", "/v1/conversations/c%00", 422),
        ("GET", "/v1/collections/c%00/documents", 422),
    ],
)
def test_a_url_holding_nul_is_refused_on_every_store(
    service: Service, method: str, url: str, status: int
) -> None:
    # PostgreSQL keeps no NUL in text: these ids, cursors and names failed their query
    # there (a 500 for the first) where SQLite answered 404.
    with service.client() as client:
        answer = client.request(method, url)
    assert answer.status_code == status, answer.text
    body = answer.json()
    message = body["error"]["message"] if status == 400 else body["detail"]
    assert "NUL" in message, body
