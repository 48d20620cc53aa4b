"""Idempotency-Key: a retried submission is answered, not run again."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping

import httpx

from tests.conftest import Service


def post(client: httpx.Client, path: str, key: str, body: Mapping[str, object]) -> httpx.Response:
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def test_same_key_and_body_gives_the_same_job_and_response(service: Service) -> None:
    key = secrets.token_hex(8)
    body = {"model": "sim", "prompt": "only once"}
    with service.client() as client:
        first = post(client, "/v1/jobs", key, body)
        again = post(client, "/v1/jobs", key, body)
        listed = client.get("/v1/jobs", params={"limit": 100}).json()["data"]
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert sum(j["id"] == first.json()["id"] for j in listed) == 1


def test_same_key_with_another_body_is_422(service: Service) -> None:
    key = secrets.token_hex(8)
    with service.client() as client:
        assert post(client, "/v1/jobs", key, {"model": "sim", "prompt": "a"}).status_code == 202
        other = post(client, "/v1/jobs", key, {"model": "sim", "prompt": "b"})
    assert other.status_code == 422
    assert "different body" in other.json()["detail"]


def test_a_second_request_while_the_first_is_accepted_is_409(service: Service) -> None:
    key = secrets.token_hex(8)
    body = {"model": "sim-slow", "messages": [{"role": "user", "content": "wait"}]}
    results: list[httpx.Response] = []
    with service.client() as client:
        # A synchronous completion holds its key for as long as it waits.
        worker = threading.Thread(
            target=lambda: results.append(post(client, "/v1/chat/completions", key, body))
        )
        worker.start()
        time.sleep(1.0)
        concurrent = post(client, "/v1/chat/completions", key, body)
        worker.join(timeout=60)
        replay = post(client, "/v1/chat/completions", key, body)
    assert concurrent.status_code == 409
    assert results[0].status_code == 200
    assert replay.json() == results[0].json()
    assert replay.headers["x-inferq-job-id"] == results[0].headers["x-inferq-job-id"]


def test_keys_are_per_api_key(service: Service) -> None:
    key = secrets.token_hex(8)
    other = service.create_key()
    body = {"model": "sim", "prompt": "mine"}
    with service.client() as mine, service.client(other) as theirs:
        a = post(mine, "/v1/jobs", key, body).json()
        b = post(theirs, "/v1/jobs", key, body).json()
    assert a["id"] != b["id"]


def test_a_retried_batch_creation_is_the_same_batch(service: Service) -> None:
    from tests.batch_support import chat_line, fresh_key, sdk_for

    key = fresh_key(service)
    sdk = sdk_for(service, key)
    line = json.dumps(chat_line("one")).encode()
    upload = sdk.files.create(file=("in.jsonl", line), purpose="batch")
    body = {
        "input_file_id": upload.id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    idem = secrets.token_hex(8)
    with service.client(key) as client:
        first = post(client, "/v1/batches", idem, body)
        again = post(client, "/v1/batches", idem, body)
        other = post(client, "/v1/batches", idem, {**body, "metadata": {"run": "2"}})
        listed = client.get("/v1/batches").json()["data"]
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # OpenAI's routes answer 400 where /v1/jobs answers 422: OpenAI's SDKs expect 400.
    assert other.status_code == 400, other.text
    assert "different body" in other.json()["error"]["message"]
    assert [b["id"] for b in listed] == [first.json()["id"]]
