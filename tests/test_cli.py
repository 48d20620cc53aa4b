"""The `inferq` command against a running service."""

from __future__ import annotations

import subprocess
import sys

import orjson

from tests.conftest import Service


def inferq(service: Service, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferq", *args],
        env={**service.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_submit_stream_prints_tokens_then_the_finished_job(service: Service) -> None:
    result = inferq(
        service,
        "submit",
        "sim",
        "stream this",
        "--stream",
        INFERQ_API_URL=service.url,
        INFERQ_API_KEY=service.key,
    )
    assert result.returncode == 0, result.stderr
    streamed, _, job_json = result.stdout.partition("\n")
    job = orjson.loads(job_json)
    assert job["status"] == "succeeded"
    assert streamed == job["output"]["text"]


def test_submit_without_a_key_explains_what_to_set(service: Service) -> None:
    env = {k: v for k, v in service.env.items() if k != "INFERQ_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "inferq", "submit", "sim", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "INFERQ_API_KEY" in result.stdout + result.stderr


def test_keys_are_listed_without_their_secret_and_can_be_revoked(service: Service) -> None:
    created = inferq(service, "keys", "create", "--name", "listing")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("iq_")
    listing = inferq(service, "keys", "list").stdout
    assert "listing" in listing and key[:10] in listing and key not in listing
    assert inferq(service, "keys", "revoke", key[:10]).returncode == 0
    assert inferq(service, "keys", "revoke", key[:10]).returncode == 1
