"""Webhooks end to end: real API, real workers, a receiver on loopback.

Signatures are checked with `standardwebhooks`, the spec's reference library, not with
inferq's own signing code.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.api.test_jobs import service_key, submit, wait_terminal
from tests.conftest import RedisDatabases, Service, start_service, wait_for
from tests.webhooks.receiver import Received, Receiver

# Retries a fraction of a second apart, so a test sees a whole schedule play out.
FAST_RETRIES = {
    "INFERQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "INFERQ_WEBHOOK_RETRY_SCHEDULE": "0,0.3,0.3,0.3",
    "INFERQ_WEBHOOK_SWEEP_INTERVAL_SECONDS": "0.2",
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def hooked(
    tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDatabases
) -> Iterator[Service]:
    """One io worker and no local worker: a local-model job stays queued until cancelled."""
    tmp = tmp_path_factory.mktemp("webhooks")
    svc = start_service(
        tmp,
        redis_dbs.allocate(),
        f"sqlite:///{tmp / 'inferq.db'}",
        workers=(("io", 4),),
        extra_env=FAST_RETRIES,
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def other_key(hooked: Service) -> str:
    return service_key(hooked)


def secret_of(client: httpx.Client) -> str:
    response = client.get("/v1/webhooks/secret")
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


def deliveries(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/webhook")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def wait_delivery_ended(client: httpx.Client, job_id: str, timeout: float = 20) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found = deliveries(client, job_id)
        return found[0] if found and found[0]["status"] in ("delivered", "failed") else None

    return wait_for(ended, timeout=timeout)  # type: ignore[return-value]


def wait_received(receiver: Receiver, path: str, count: int = 1) -> list[Received]:
    wait_for(lambda: len(receiver.received(path)) >= count, timeout=20)
    return receiver.received(path)


def hook_path() -> str:
    return f"/hooks/{uuid.uuid4().hex}"


def test_finished_job_is_posted_once_signed_with_the_keys_secret(
    hooked: Service, receiver: Receiver
) -> None:
    path = hook_path()
    with hooked.client() as client:
        job = submit(client, model="sim", prompt="hello", webhook={"url": receiver.url(path)})
        done = wait_terminal(client, job["id"])
        (request,) = wait_received(receiver, path)
        event = Webhook(secret_of(client)).verify(request.body, request.headers)
        delivery = wait_delivery_ended(client, job["id"])
    time.sleep(0.6)  # room for a duplicate to show up (3 sweeps)
    assert len(receiver.received(path)) == 1
    assert event["type"] == "job.succeeded"
    assert event["data"] == done
    assert event["timestamp"] == done["finished_at"]
    assert request.headers["content-type"] == "application/json"
    assert delivery["id"] == request.headers["webhook-id"]
    assert delivery["status"] == "delivered" and delivery["url"] == receiver.url(path)
    assert [a["status_code"] for a in delivery["attempts"]] == [200]


def test_signature_does_not_verify_with_another_secret_or_a_changed_body(
    hooked: Service, receiver: Receiver
) -> None:
    path = hook_path()
    with hooked.client() as client:
        submit(client, model="sim", prompt="hello", webhook={"url": receiver.url(path)})
        (request,) = wait_received(receiver, path)
        right = Webhook(secret_of(client))
    right.verify(request.body, request.headers)
    wrong = Webhook("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    with pytest.raises(WebhookVerificationError):
        wrong.verify(request.body, request.headers)
    tampered = request.body.replace(b'"succeeded"', b'"failed"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        right.verify(tampered, request.headers)


def test_receiver_errors_are_retried_with_the_same_id_until_a_2xx(
    hooked: Service, receiver: Receiver
) -> None:
    path = hook_path()
    receiver.answer(path, 500, 500)
    with hooked.client() as client:
        job = submit(client, model="sim", prompt="hello", webhook={"url": receiver.url(path)})
        delivery = wait_delivery_ended(client, job["id"])
        webhook = Webhook(secret_of(client))
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
    assert all(a["duration_ms"] >= 0 and a["error"] is None for a in delivery["attempts"])
    requests = receiver.received(path)
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {delivery["id"]}
    for request in requests:
        webhook.verify(request.body, request.headers)


def test_delivery_fails_after_the_last_scheduled_attempt(
    hooked: Service, receiver: Receiver
) -> None:
    path = hook_path()
    receiver.answer(path, 503, 503, 503, 503, 503)
    with hooked.client() as client:
        job = submit(client, model="sim", prompt="hello", webhook={"url": receiver.url(path)})
        delivery = wait_delivery_ended(client, job["id"])
    assert delivery["status"] == "failed" and delivery["last_status_code"] == 503
    assert [a["status_code"] for a in delivery["attempts"]] == [503] * 4
    assert len(receiver.received(path)) == 4


def test_failed_job_is_posted_as_job_failed(hooked: Service, receiver: Receiver) -> None:
    path = hook_path()
    with hooked.client() as client:
        job = submit(client, model="sim-fail", prompt="hello", webhook={"url": receiver.url(path)})
        (request,) = wait_received(receiver, path)
        done = wait_terminal(client, job["id"])
    event = json.loads(request.body)
    assert event["type"] == "job.failed" and event["data"] == done


def test_job_cancelled_in_the_queue_is_posted_as_job_cancelled(
    hooked: Service, receiver: Receiver
) -> None:
    path = hook_path()
    with hooked.client() as client:
        # No local-model worker runs here, so this job stays queued; the API ends it.
        job = submit(client, model="gemma-3-270m", prompt="hi", webhook={"url": receiver.url(path)})
        assert deliveries(client, job["id"])[0]["status"] == "waiting"
        assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        (request,) = wait_received(receiver, path)
        Webhook(secret_of(client)).verify(request.body, request.headers)
    event = json.loads(request.body)
    assert event["type"] == "job.cancelled" and event["data"]["id"] == job["id"]


def test_job_without_a_webhook_has_an_empty_delivery_log(hooked: Service) -> None:
    with hooked.client() as client:
        job = submit(client, model="sim", prompt="hello")
        wait_terminal(client, job["id"])
        assert deliveries(client, job["id"]) == []
        assert "webhook" not in client.get(f"/v1/jobs/{job['id']}").json()


def test_another_keys_job_delivery_log_is_not_found(
    hooked: Service, receiver: Receiver, other_key: str
) -> None:
    other = other_key
    with hooked.client() as owner, hooked.client(other) as stranger:
        job = submit(owner, model="sim", prompt="mine", webhook={"url": receiver.url(hook_path())})
        response = stranger.get(f"/v1/jobs/{job['id']}/webhook")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert secret_of(owner) != secret_of(stranger)
        assert stranger.get("/v1/jobs/nope/webhook").status_code == 404


def test_rotated_secret_signs_alongside_the_previous_one(
    hooked: Service, receiver: Receiver, other_key: str
) -> None:
    path = hook_path()
    with hooked.client(other_key) as client:
        old = secret_of(client)
        assert old.startswith("whsec_") and secret_of(client) == old
        rotated = client.post("/v1/webhooks/secret/rotate")
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new != old and secret_of(client) == new
        submit(client, model="sim", prompt="hello", webhook={"url": receiver.url(path)})
        (request,) = wait_received(receiver, path)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(request.body, request.headers)
    Webhook(old).verify(request.body, request.headers)


def test_delivery_waits_in_the_database_for_a_worker_started_later(
    hooked: Service, receiver: Receiver
) -> None:
    """Runs last in this module: it replaces the service's worker."""
    path = hook_path()
    receiver.answer(path, 500)
    for worker in hooked.workers:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    with hooked.client() as client:
        # The job ends (cancelled in the API) while no worker is alive to hear of it.
        job = submit(client, model="gemma-3-270m", prompt="hi", webhook={"url": receiver.url(path)})
        client.delete(f"/v1/jobs/{job['id']}")
        time.sleep(0.5)
        assert receiver.received(path) == []
        hooked.start_worker("io", 4)
        delivery = wait_delivery_ended(client, job["id"], timeout=30)
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    assert len(receiver.received(path)) == 2
