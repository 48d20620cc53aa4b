"""Submit, poll, list, cancel: over HTTP against a running service with real workers."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx

from tests.conftest import KEY_CACHE_SECONDS, Service, wait_for


def submit(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    return job


def wait_terminal(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout=timeout)  # type: ignore[return-value]


def test_gemma_job_is_accepted_at_once_and_polls_to_real_text(service: Service) -> None:
    with service.client() as client:
        started = time.monotonic()
        job = submit(
            client,
            model="gemma-3-270m",
            prompt="The capital of France is",
            max_tokens=24,
            temperature=0,
            seed=7,
            metadata={"ticket": "42"},
        )
        assert time.monotonic() - started < 2.0
        assert job["status"] == "queued" and job["output"] is None
        done = wait_terminal(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["output"]["text"].strip()
    assert done["output"]["finish_reason"] in ("stop", "length")
    assert done["usage"]["completion_tokens"] > 0 and done["usage"]["prompt_tokens"] > 0
    assert done["metadata"] == {"ticket": "42"}
    assert done["attempts"] == 1
    assert done["started_at"] and done["finished_at"] >= done["started_at"]
    # The model ran inside the worker: its circuit is this host's, not every host's.
    with service.client() as client:
        breakers = client.get("/v1/admin/breakers").json()["data"]
    gemma = [b for b in breakers if b["endpoint"].startswith("llamacpp:gemma-3-270m")]
    assert [b["endpoint"] for b in gemma] == [f"llamacpp:gemma-3-270m@{socket.gethostname()}"]
    assert gemma[0]["state"] == "closed" and gemma[0]["calls"] >= 1


def test_same_prompt_at_temperature_zero_with_seed_gives_the_same_text(service: Service) -> None:
    body = {
        "model": "gemma-3-270m",
        "max_tokens": 24,
        "temperature": 0,
        "seed": 123,
        "messages": [{"role": "user", "content": "Name three colours."}],
    }
    with service.client() as client:
        first = submit(client, **body)
        second = submit(client, **body)
        texts = [wait_terminal(client, j["id"])["output"]["text"] for j in (first, second)]
    assert texts[0] and texts[0] == texts[1]


def test_failed_provider_call_ends_the_job_failed_with_its_error(service: Service) -> None:
    with service.client() as client:
        job = submit(client, model="sim-fail", prompt="hello")
        done = wait_terminal(client, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["type"] == "rejected" and done["error"]["message"]


def test_list_is_newest_first_with_cursor_pagination_and_status_filter(service: Service) -> None:
    key = service_key(service)
    with service.client(key) as client:
        ids = [submit(client, model="sim", prompt=f"job {i}")["id"] for i in range(5)]
        for job_id in ids:
            wait_terminal(client, job_id)
        first = client.get("/v1/jobs", params={"limit": 2}).json()
        second = client.get("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        third = client.get("/v1/jobs", params={"limit": 2, "cursor": second["next_cursor"]}).json()
        succeeded = client.get("/v1/jobs", params={"status": "succeeded"}).json()
        queued = client.get("/v1/jobs", params={"status": "queued"}).json()
    listed = [j["id"] for page in (first, second, third) for j in page["data"]]
    assert listed == list(reversed(ids))
    assert third["next_cursor"] is None
    assert {j["id"] for j in succeeded["data"]} == set(ids)
    assert queued["data"] == []


def service_key(service: Service) -> str:
    """A fresh API key, created through the CLI as an operator would."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "inferq", "keys", "create", "--name", "test"],
        env=service.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


def test_another_keys_job_is_not_found_on_every_route(service: Service) -> None:
    other = service_key(service)
    with service.client() as owner, service.client(other) as stranger:
        job = submit(owner, model="sim", prompt="mine")
        for method, path in [
            ("GET", f"/v1/jobs/{job['id']}"),
            ("DELETE", f"/v1/jobs/{job['id']}"),
            ("GET", f"/v1/jobs/{job['id']}/events"),
        ]:
            response = stranger.request(method, path)
            assert response.status_code == 404, (method, path)
            assert response.headers["content-type"] == "application/problem+json"
        assert job["id"] not in {j["id"] for j in stranger.get("/v1/jobs").json()["data"]}
        assert wait_terminal(owner, job["id"])["status"] == "succeeded"


def test_revoked_key_is_refused(service: Service) -> None:
    import subprocess
    import sys

    key = service_key(service)
    subprocess.run(
        [sys.executable, "-m", "inferq", "keys", "revoke", key[:10]],
        env=service.env,
        check=True,
        capture_output=True,
    )
    time.sleep(KEY_CACHE_SECONDS + 0.5)  # the API caches key lookups
    with service.client(key) as client:
        assert client.get("/v1/jobs").status_code == 401


def test_cancel_queued_job_never_runs(service: Service) -> None:
    with service.client() as client:
        # Occupy the single local-model slot so the next local job stays queued.
        busy = submit(client, model="gemma-3-270m", prompt="Once upon a time", max_tokens=200)
        queued = submit(client, model="gemma-3-270m", prompt="Hello", max_tokens=8)
        response = client.delete(f"/v1/jobs/{queued['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        client.delete(f"/v1/jobs/{busy['id']}")
        wait_terminal(client, busy["id"])
        time.sleep(1.0)
        final = client.get(f"/v1/jobs/{queued['id']}").json()
    assert final["status"] == "cancelled"
    assert final["attempts"] == 0 and final["started_at"] is None


def test_cancel_running_job_stops_it_and_keeps_partial_output(service: Service) -> None:
    with service.client() as client:
        job = submit(client, model="sim-slow", prompt="a long answer please")
        wait_for(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running")
        time.sleep(1.0)
        response = client.delete(f"/v1/jobs/{job['id']}")
        assert response.status_code == 202
        done = wait_terminal(client, job["id"], timeout=10)
    assert done["status"] == "cancelled"
    assert done["output"]["finish_reason"] == "cancelled"
    words = done["output"]["text"].split()
    assert 0 < len(words) < 60
    with service.client() as client:
        again = client.delete(f"/v1/jobs/{job['id']}")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_cancel_finished_job_is_a_conflict(service: Service) -> None:
    with service.client() as client:
        job = submit(client, model="sim", prompt="quick")
        wait_terminal(client, job["id"])
        response = client.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 409
    assert response.json()["status"] == 409


def test_a_job_whose_answer_the_database_refuses_still_ends(service: Service) -> None:
    """`sim-nul` answers with NUL characters, which PostgreSQL keeps in no text column:
    the job ends failed, saying why, instead of staying running with its message gone."""
    postgres = service.database_url.startswith("postgresql")
    with service.client(service.create_key()) as client:
        job = wait_terminal(client, submit(client, model="sim-nul", prompt="x")["id"], 30)
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "sim-nul", "messages": [{"role": "user", "content": "x"}]},
        )
    if not postgres:  # SQLite keeps them
        assert job["status"] == "succeeded" and "\x00" in job["output"]["text"]
        assert chat.status_code == 200
        return
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "internal_error"
    message = job["error"]["message"]
    assert message.startswith("the database refused the job's result") and "NUL" in message
    assert "INSERT" not in message and "UPDATE" not in message  # no SQL for the client
    assert job["usage"] is not None  # the tokens it spent are still counted
    assert chat.status_code == 502 and "NUL" in chat.json()["error"]["message"]
