"""The deployment files say what the code does: every command they run starts, through
the real CLI and with their environment, the process they mean (recorded, not started);
every variable they set is a setting, every probe they call is a route, and the
Kubernetes manifests are valid objects of the API they name.

Building the image and running it is tests/test_container.py (`make test-container`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from pydantic import AliasChoices
from typer.testing import CliRunner

from inferq import worker_process
from inferq.api import router
from inferq.cli import app
from inferq.config import Settings
from inferq.db import migrate
from inferq.observability import logs

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes" / "inferq.yaml"
# The oldest Kubernetes release still supported upstream when the manifests were written.
KUBERNETES_VERSION = "1.32.0"


class Launches:
    """`inferq <args>` through the real CLI with the process it would start replaced by a
    record of what it was asked to start; the settings are read from `env` as they would
    be in the container."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, object]] = []
        monkeypatch.setattr(logs, "configure_logging", lambda *args: None)
        monkeypatch.setattr(uvicorn, "run", self._api)
        monkeypatch.setattr(worker_process, "run_worker", self._worker)
        monkeypatch.setattr(migrate, "upgrade", lambda url: self.calls.append(("migrate", url)))

    def _api(self, target: str, **options: object) -> None:
        self.calls.append(("api", (target, options["host"], options["port"])))

    def _worker(self, settings: Settings, pool: str, concurrency: int | None) -> int:
        self.calls.append(("worker", pool))
        return 0

    def run(self, args: list[str], env: dict[str, str]) -> tuple[str, object]:
        self.calls.clear()
        # Only `env`: none of this shell's INFERQ_* settings.
        unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INFERQ_")}
        result = CliRunner().invoke(app, args, env={**unset, **env})
        assert result.exit_code == 0, (args, result.output)
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> Launches:
    return Launches(monkeypatch)


def setting_names() -> set[str]:
    names = set()
    prefix = Settings.model_config.get("env_prefix", "")
    for name, field in Settings.model_fields.items():
        names.add(f"{prefix}{name}".upper())
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(c).upper() for c in field.validation_alias.choices)
    return names


def api_paths() -> set[str]:
    app = FastAPI()
    app.include_router(router)
    return set(app.openapi()["paths"])


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def inferq_services() -> dict[str, Any]:
    return {
        name: service
        for name, service in compose_services().items()
        if service["image"].startswith("${INFERQ_IMAGE")
    }


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as the container sees it (`${VAR:?...}` given a value)."""
    return {
        name: "iq_compose" if value.startswith("${INFERQ_BOOTSTRAP_KEY") else str(value)
        for name, value in service["environment"].items()
    }


def kubernetes_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc]


def kubernetes_env() -> dict[str, str]:
    """What `envFrom` gives every container: the ConfigMap's and the Secret's entries."""
    env: dict[str, str] = {}
    for doc in kubernetes_documents():
        if doc["kind"] in {"ConfigMap", "Secret"}:
            env.update(doc.get("data") or doc.get("stringData") or {})
    return env


def inferq_containers() -> list[dict[str, Any]]:
    containers = []
    for doc in kubernetes_documents():
        if doc["kind"] in {"Deployment", "Job"}:
            containers.extend(doc["spec"]["template"]["spec"]["containers"])
    return containers


def test_launches_records_what_the_cli_would_start(launches: Launches) -> None:
    assert launches.run(["worker", "--pool", "local"], {}) == ("worker", "local")
    for wrong in (["worker", "--pool", "gpu"], ["serve-api"], ["api", "--workers", "2"]):
        with pytest.raises(AssertionError):
            launches.run(wrong, {})


def test_compose_runs_migrate_the_api_and_a_worker_of_each_pool(launches: Launches) -> None:
    launched = {
        name: launches.run(service["command"], compose_env(service))
        for name, service in inferq_services().items()
    }
    assert launched == {
        "migrate": ("migrate", "postgresql://inferq:inferq@postgres:5432/inferq"),
        # The image sets INFERQ_HOST=0.0.0.0 (the Dockerfile), not the compose file.
        "api": ("api", ("inferq.app:create_app", "127.0.0.1", 8000)),
        "worker-io": ("worker", "io"),
        "worker-local": ("worker", "local"),
    }


def test_compose_sets_only_real_settings_and_starts_after_the_migration() -> None:
    known = setting_names()
    for name, service in inferq_services().items():
        env = service["environment"]
        assert {"INFERQ_REDIS_URL", "INFERQ_DATABASE_URL"} <= env.keys(), name
        assert set(env) <= known, (name, set(env) - known)
        if name != "migrate":
            assert service["depends_on"]["migrate"] == {
                "condition": "service_completed_successfully"
            }
    assert "INFERQ_BOOTSTRAP_KEY" in inferq_services()["api"]["environment"]


def test_compose_health_check_calls_a_route_of_the_api() -> None:
    check = " ".join(inferq_services()["api"]["healthcheck"]["test"])
    assert "/readyz" in check and "/readyz" in api_paths()


def test_kubernetes_manifests_are_valid_objects() -> None:
    documents = kubernetes_documents()
    assert {d["kind"] for d in documents} == {
        "Secret",
        "ConfigMap",
        "Job",
        "Deployment",
        "Service",
    }
    for doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_rejects_a_misspelt_field() -> None:
    deployment = next(d for d in kubernetes_documents() if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kubernetes_containers_run_inferq_commands_with_real_settings(
    launches: Launches,
) -> None:
    env = kubernetes_env()
    assert set(env) <= setting_names(), set(env) - setting_names()
    launched = sorted(launches.run(c["args"], env) for c in inferq_containers())
    assert launched == [
        ("api", ("inferq.app:create_app", "127.0.0.1", 8000)),
        ("migrate", "postgresql://inferq:CHANGE-ME@postgres:5432/inferq"),
        ("worker", "io"),
        ("worker", "local"),
    ]
    for container in inferq_containers():
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"inferq"}


def test_kubernetes_probes_and_selectors_match() -> None:
    paths = api_paths()
    for doc in kubernetes_documents():
        if doc["kind"] != "Deployment":
            continue
        template = doc["spec"]["template"]
        assert (
            doc["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        )
        for container in template["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in container:
                    continue
                get = container[probe]["httpGet"]
                assert get["port"] in ports
                if get["port"] == "http":
                    assert get["path"] in paths
    service = next(d for d in kubernetes_documents() if d["kind"] == "Service")
    api = next(d for d in kubernetes_documents() if d["metadata"]["name"] == "inferq-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
