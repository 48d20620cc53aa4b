"""The image the Dockerfile builds runs inferq: the migration, the API and a worker of each
pool, each in its own container, against the tests' Redis and database, with jobs through
HTTP end to end.

Needs Docker or Podman and is not part of `make test` (building the image compiles
llama.cpp): `make test-container`. INFERQ_TEST_IMAGE names an image built already;
without it the test builds one from the Dockerfile. The containers share the host's
network, so they reach the same Redis and PostgreSQL (INFERQ_TEST_DATABASE_URL) as the
other tests; without PostgreSQL they share one SQLite file through a mounted directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import drop_postgres, free_port, fresh_postgres, postgres_url, wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.container, pytest.mark.timeout(2400)]


def container_engine() -> str | None:
    """Docker if its daemon answers, else Podman, else None."""
    chosen = os.environ.get("INFERQ_TEST_CONTAINER_ENGINE")
    candidates = [chosen] if chosen else ["docker", "podman"]
    for engine in candidates:
        if shutil.which(engine) and _ok([engine, "info"]):
            return engine
    return None


def _ok(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True, timeout=60).returncode == 0


class Containers:
    """inferq processes in containers of one image, removed at the end."""

    def __init__(self, engine: str, image: str, env: dict[str, str], data: Path) -> None:
        self.engine = engine
        self.image = image
        self.env = env
        self.data = data
        self.prefix = "inferq-test-" + secrets.token_hex(4)
        self.names: list[str] = []

    def _base(self, extra_env: dict[str, str] | None = None) -> list[str]:
        env = {**self.env, **(extra_env or {})}
        options = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
        return [self.engine, "run", "--network", "host", "-v", f"{self.data}:/data", *options]

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._base(), "--rm", self.image, *command],
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> str:
        full = f"{self.prefix}-{name}"
        run = [*self._base(env), "-d", "--name", full, self.image, *command]
        subprocess.run(run, check=True)
        self.names.append(full)
        return full

    def stop(self, name: str) -> int:
        """SIGTERM, as an orchestrator stops it; its exit code."""
        subprocess.run([self.engine, "stop", "-t", "60", name], check=True, capture_output=True)
        state = subprocess.run(
            [self.engine, "inspect", "--format", "{{.State.ExitCode}}", name],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(state.stdout.strip())

    def logs(self) -> str:
        out = []
        for name in self.names:
            logs = subprocess.run([self.engine, "logs", name], capture_output=True, text=True)
            out.append(f"--- {name}\n{(logs.stdout + logs.stderr)[-4000:]}")
        return "\n".join(out)

    def remove(self) -> None:
        for name in self.names:
            subprocess.run([self.engine, "rm", "-f", name], capture_output=True)


@pytest.fixture(scope="module")
def image() -> str:
    engine = container_engine()
    if engine is None:
        pytest.skip("no container engine (docker or podman) answers")
    named = os.environ.get("INFERQ_TEST_IMAGE")
    if named:
        return named
    tag = "inferq:test"
    subprocess.run([engine, "build", "-t", tag, str(ROOT)], check=True, timeout=2400)
    return tag


@pytest.fixture
def containers(image: str, redis_url: str, tmp_path: Path) -> Iterator[Containers]:
    engine = container_engine()
    assert engine is not None
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image runs as its own user, not as this one
    admin = postgres_url()
    database, dropped = fresh_postgres(admin) if admin else ("sqlite:////data/inferq.db", None)
    env = {
        "INFERQ_REDIS_URL": redis_url,
        "INFERQ_DATABASE_URL": database,
        "INFERQ_PORT": str(free_port()),
        "INFERQ_BOOTSTRAP_KEY": "iq_container_" + secrets.token_urlsafe(12),
        "INFERQ_HOST": "127.0.0.1",
    }
    running = Containers(engine, image, env, data)
    try:
        yield running
    finally:
        running.remove()
        if admin and dropped:
            drop_postgres(admin, dropped)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_image_runs_every_process_and_serves_jobs(containers: Containers) -> None:
    migrated = containers.run("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "database is up to date" in migrated.stdout
    # How a deployment without a bootstrap key gets its first key (deploy/kubernetes).
    created = containers.run("keys", "create", "--name", "app", "--admin")
    assert created.returncode == 0, created.stderr
    made_key = created.stdout.strip().splitlines()[-1]

    containers.start("api", "api")
    # As deploy/kubernetes runs it: the worker's own metrics port, its liveness probe.
    metrics_port = free_port()
    io_worker = containers.start(
        "worker-io",
        *("worker", "--pool", "io"),
        env={"INFERQ_WORKER_METRICS_PORT": str(metrics_port)},
    )
    local_worker = containers.start("worker-local", "worker", "--pool", "local")
    env = containers.env
    url = f"http://127.0.0.1:{env['INFERQ_PORT']}"
    headers = {"Authorization": f"Bearer {env['INFERQ_BOOTSTRAP_KEY']}"}
    try:
        wait_for(lambda: _ready(url), timeout=120)
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            _a_sim_job_succeeds(client)
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            assert 'inferq_jobs_finished_total{model="sim",outcome="succeeded"} 1.0' in metrics
            _a_gemma_stream_answers(client)
            mine = client.get("/v1/jobs", headers={"Authorization": f"Bearer {made_key}"})
            assert mine.status_code == 200 and mine.json()["data"] == []
            bad = client.post("/v1/jobs", json={"model": "no-such-model", "messages": []})
            assert bad.status_code == 422
            assert bad.headers["content-type"] == "application/problem+json"
        # Stopped as an orchestrator stops them, each worker exits cleanly.
        assert containers.stop(io_worker) == 0
        assert containers.stop(local_worker) == 0
    except BaseException:
        print(containers.logs())
        raise


def _a_sim_job_succeeds(client: httpx.Client) -> None:
    body = {"model": "sim", "messages": [{"role": "user", "content": "hello"}]}
    accepted = client.post("/v1/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]

    def finished() -> dict[str, object] | None:
        job: dict[str, object] = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in {"succeeded", "failed", "cancelled"} else None

    job = wait_for(finished, timeout=60)
    assert isinstance(job, dict)
    assert job["status"] == "succeeded", job
    output = job["output"]
    assert isinstance(output, dict) and output["text"]


def _a_gemma_stream_answers(client: httpx.Client) -> None:
    body = {
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": "The capital of France is"}],
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
    }
    text, lines = "", []
    started = time.monotonic()
    with client.stream("POST", "/v1/chat/completions", json=body, timeout=180) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                lines.append(line[6:])
    assert lines[-1] == "[DONE]", (lines, time.monotonic() - started)
    for data in lines[:-1]:
        for choice in json.loads(data)["choices"]:
            text += choice["delta"].get("content") or ""
    assert text.strip()


def test_one_container_runs_the_whole_service(image: str, tmp_path: Path) -> None:
    """`docker run -p 8000:8000 inferq serve`: the API, both workers and an embedded Redis
    in one container, SQLite under /data; SIGTERM stops them all and exits 0."""
    engine = container_engine()
    assert engine is not None
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    env = {
        "INFERQ_PORT": str(free_port()),
        "INFERQ_BOOTSTRAP_KEY": "iq_serve_" + secrets.token_urlsafe(12),
    }
    running = Containers(engine, image, env, data)
    url = f"http://127.0.0.1:{env['INFERQ_PORT']}"
    headers = {"Authorization": f"Bearer {env['INFERQ_BOOTSTRAP_KEY']}"}
    try:
        serve = running.start("serve", "serve")
        wait_for(lambda: _ready(url), timeout=120)
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            _a_sim_job_succeeds(client)
        assert running.stop(serve) == 0
        assert (data / "inferq.db").exists()
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.remove()
