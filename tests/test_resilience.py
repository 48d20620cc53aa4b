"""Retries, fallbacks, the shared circuit breaker and timeouts, through real workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_events import read_events, text_of
from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import TESTS, RedisDatabases, Service, start_service


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDatabases
) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("faulty")
    svc = start_service(
        tmp,
        redis_dbs.allocate(),
        f"sqlite:///{tmp / 'db.sqlite'}",
        workers=(("io", 16),),
        extra_env={
            "INFERQ_MODELS_FILE": str(TESTS / "resilience_models.yaml"),
            "INFERQ_TEST_FAULT_FILE": str(tmp / "fault"),
            "INFERQ_RETRY_BASE_DELAY_SECONDS": "0.05",
            "INFERQ_RETRY_MAX_DELAY_SECONDS": "0.2",
            "INFERQ_BREAKER_MIN_CALLS": "3",
            "INFERQ_BREAKER_OPEN_SECONDS": "2",
            "INFERQ_BREAKER_HALF_OPEN_PROBES": "1",
        },
    )
    try:
        yield svc
    finally:
        svc.stop()


def run(service: Service, model: str, **body: Any) -> dict[str, Any]:
    with service.client() as client:
        job = submit(client, model=model, prompt=body.pop("prompt", "hello"), **body)
        return wait_terminal(client, job["id"], timeout=60)


def seconds(job: dict[str, Any]) -> float:
    started = datetime.fromisoformat(job["started_at"])
    return (datetime.fromisoformat(job["finished_at"]) - started).total_seconds()


def test_transient_failures_are_retried_and_counted_on_the_job(faulty: Service) -> None:
    job = run(faulty, "sim-twice")
    assert job["status"] == "succeeded"
    assert job["attempts"] == 3 and job["served_model"] == "sim-twice"


def test_retry_after_from_the_provider_is_honoured(faulty: Service) -> None:
    job = run(faulty, "sim-429")
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert seconds(job) >= 1.5


def test_a_refusal_fails_at_once_without_retry_or_fallback(faulty: Service) -> None:
    job = run(faulty, "sim-refuses")
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"]["type"] == "rejected" and job["served_model"] is None


def test_exhausted_model_falls_back_and_the_job_names_who_served(faulty: Service) -> None:
    job = run(faulty, "sim-down")
    assert job["status"] == "succeeded"
    assert job["served_model"] == "sim"
    assert job["attempts"] == 4  # three on sim-down, one on sim


def test_stream_cut_mid_answer_is_retried_and_readers_are_told_to_reset(faulty: Service) -> None:
    with faulty.client() as client:
        job = submit(client, model="sim-cut-once", prompt="cut me")
        events = read_events(client, job["id"])
        final = wait_terminal(client, job["id"])
    kinds = [e.event for e in events]
    assert final["status"] == "succeeded" and final["attempts"] == 2
    reset = kinds.index("reset")
    # Text had been streamed when the attempt broke (deltas a millisecond apart share
    # entries, so their number is not the number of tokens).
    assert kinds[:reset] and set(kinds[:reset]) == {"delta"} and kinds[-1] == "done"
    assert text_of(events[reset:]) == final["output"]["text"]
    assert len(final["output"]["text"].split()) == 8


def test_breaker_opens_skips_the_failing_primary_then_closes_after_recovery(
    faulty: Service,
) -> None:
    fault = Path(faulty.env["INFERQ_TEST_FAULT_FILE"])
    fault.touch()
    try:
        failing = [run(faulty, "sim-toggle", prompt=f"open {i}") for i in range(3)]
        assert all(j["served_model"] == "sim" and j["attempts"] == 2 for j in failing)
        with faulty.client() as client:
            states = client.get("/v1/admin/breakers").json()["data"]
        assert {"endpoint": "sim:sim-toggle", "state": "open"}.items() <= _state(states).items()
        scraped = httpx.get(faulty.url + "/metrics").text
        assert 'inferq_breaker_state{endpoint="sim:sim-toggle",state="open"} 1.0' in scraped
        skipped = run(faulty, "sim-toggle", prompt="while open")
        # No call reached the primary: the only attempt was the fallback's.
        assert skipped["served_model"] == "sim" and skipped["attempts"] == 1
    finally:
        fault.unlink()
    time.sleep(2.2)  # open_seconds: the next call is a half-open probe
    probe = run(faulty, "sim-toggle", prompt="probe")
    assert probe["served_model"] == "sim-toggle" and probe["attempts"] == 1
    with faulty.client() as client:
        assert _state(client.get("/v1/admin/breakers").json()["data"])["state"] == "closed"


def test_a_job_with_every_circuit_open_waits_for_half_open_instead_of_failing(
    faulty: Service,
) -> None:
    fault = Path(faulty.env["INFERQ_TEST_FAULT_FILE"])
    fault.touch()
    try:
        failing = [run(faulty, "sim-toggle-alone", prompt=f"down {i}") for i in range(3)]
        assert all(j["error"]["type"] == "unavailable" for j in failing)
    finally:
        fault.unlink()
    # The circuit is open and the model has no fallback: the job waits out the open
    # time (2 s) and is served by the half-open probe, where it used to fail at once.
    job = run(faulty, "sim-toggle-alone", prompt="after the outage")
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert 1.0 <= seconds(job) < 5


def _state(states: list[dict[str, Any]]) -> dict[str, Any]:
    return next(s for s in states if s["endpoint"] == "sim:sim-toggle")


def test_job_over_its_total_time_fails_with_a_timeout_and_does_not_hang(faulty: Service) -> None:
    job = run(faulty, "sim-hang")
    assert job["status"] == "failed" and job["error"]["type"] == "timeout"
    assert 1.5 <= seconds(job) < 5
