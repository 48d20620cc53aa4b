"""The model registry: loading, validation, defaults, env interpolation, provider reuse."""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inferq.errors import UnknownModel
from inferq.providers.llamacpp import LlamaCppProvider
from inferq.providers.openai import OpenAIProvider
from inferq.providers.registry import PROVIDERS, ModelRegistry, RegistryError, interpolate
from inferq.providers.request import GenerationRequest
from inferq.providers.sim import SimProvider
from tests.providers.support import collect

TESTS = Path(__file__).resolve().parents[1]

SIM_ONLY = """
models:
  fast:
    provider: sim
    description: "Simulated provider (not a model)"
    params: {latency_ms: 0, tokens_per_second: 10000, output_tokens: 4}
"""


def test_shipped_registry_loads_the_local_model_and_the_simulated_provider() -> None:
    registry = ModelRegistry.load()
    assert registry.names() == ["gemma-3-270m", "sim", "all-minilm-l6-v2"]
    gemma = registry.get("gemma-3-270m")
    assert (gemma.provider, gemma.pool) == ("llamacpp", "local")
    assert "base model" in gemma.description
    assert "transcript" in gemma.description
    sim = registry.get("sim")
    assert (sim.provider, sim.pool) == ("sim", "io")
    assert "not a model" in sim.description


def test_the_end_to_end_tests_registry_loads() -> None:
    registry = ModelRegistry.load(TESTS / "models.yaml", environ={"INFERQ_TEST_SIM_RECORD": "x"})
    assert registry.get("sim-slow").params["record_path"] == "x"
    assert registry.get("sim-fail").params["failure_rate"] == 1.0


def test_unknown_model_is_an_error_listing_the_known_ones() -> None:
    registry = ModelRegistry.parse(SIM_ONLY, "inline")
    with pytest.raises(UnknownModel) as raised:
        registry.get("gpt-17")
    assert "gpt-17" in raised.value.detail
    assert "fast" in raised.value.detail
    with pytest.raises(UnknownModel):
        registry.provider("gpt-17")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("models: [unclosed", "not YAML"),
        ("- just\n- a list\n", "models"),
        ("models: {}\n", "models"),
        ("models:\n  m: {provider: nope}\n", "unknown provider 'nope'"),
        ("models:\n  m: {description: no provider}\n", "models.m.provider"),
        ("models:\n  m: {provider: sim, pool: gpu}\n", "models.m.pool"),
        ("models:\n  m: {provider: sim, colour: blue}\n", "models.m.colour"),
        ("models:\n  m: {provider: sim, max_tokens: 0}\n", "models.m.max_tokens"),
        ("models:\n  m: {provider: sim, params: [1, 2]}\n", "models.m.params"),
        ("models:\n  m: {provider: openai}\n", "models.m.params: missing params: model"),
        ("models:\n  m: {provider: sim, params: {latency: 5}}\n", "latency"),
        ("models:\n  m: {provider: llamacpp, params: {n_ctx: lots}}\n", "n_ctx"),
    ],
)
def test_bad_registry_file_is_an_error_naming_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as raised:
        ModelRegistry.load(path)
    assert str(path) in str(raised.value)
    assert problem in str(raised.value)


def test_missing_registry_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"missing\.yaml"):
        ModelRegistry.load(tmp_path / "missing.yaml")


def test_pool_defaults_to_local_for_llamacpp_and_io_otherwise() -> None:
    text = """
models:
  llamacpp: {provider: llamacpp}
  openai: {provider: openai, params: {model: m}}
  anthropic: {provider: anthropic, params: {model: m}}
  sim: {provider: sim}
  pinned: {provider: sim, pool: local}
"""
    registry = ModelRegistry.parse(text, "inline")
    pools = {spec.name: spec.pool for spec in registry.specs()}
    assert set(pools) - {"pinned"} == set(PROVIDERS)  # every provider is covered
    assert pools == {
        "llamacpp": "local",
        "openai": "io",
        "anthropic": "io",
        "sim": "io",
        "pinned": "local",
    }


def test_a_models_pool_or_the_default_for_a_model_gone_from_the_registry() -> None:
    # A job queued before its model left the file is still published somewhere.
    registry = ModelRegistry.parse("models:\n  pinned: {provider: sim, pool: local}\n", "inline")
    assert registry.pool_of("pinned") == "local"
    assert registry.pool_of("gone") == "io"
    assert registry.pool_of("gone", "local") == "local"


def test_a_model_run_in_the_worker_has_a_breaker_endpoint_per_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = """
models:
  gemma: {provider: llamacpp}
  served: {provider: llamacpp, breaker_endpoint: gpu-box}
  remote: {provider: openai, params: {model: m, base_url: 'http://10.0.0.5:8000/v1'}}
  cloud: {provider: anthropic, params: {model: m}}
  sim: {provider: sim}
"""
    registry = ModelRegistry.parse(text, "inline")
    endpoints = {}
    for host in ("host-a", "host-b"):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        endpoints[host] = {spec.name: spec.endpoint for spec in registry.specs()}
    assert endpoints["host-a"] == {
        "gemma": "llamacpp:gemma@host-a",
        "served": "gpu-box",  # named in the registry: as written
        "remote": "openai:http://10.0.0.5:8000/v1",
        "cloud": "anthropic:cloud",
        "sim": "sim:sim",
    }
    # Only the in-process model's circuit differs from host to host.
    changed = {n for n, e in endpoints["host-b"].items() if e != endpoints["host-a"][n]}
    assert changed == {"gemma"} and endpoints["host-b"]["gemma"] == "llamacpp:gemma@host-b"


def test_optional_limits_are_kept_on_the_spec() -> None:
    text = "models:\n  m:\n    provider: sim\n    max_tokens: 64\n    context_window: 512\n"
    spec = ModelRegistry.parse(text, "inline").get("m")
    assert (spec.max_tokens, spec.context_window) == (64, 512)


def test_provider_instance_is_created_once_and_reused_across_threads() -> None:
    registry = ModelRegistry.parse(SIM_ONLY, "inline")
    with ThreadPoolExecutor(8) as pool:
        providers = list(pool.map(lambda _: registry.provider("fast"), range(32)))
    assert all(p is providers[0] for p in providers)
    assert isinstance(providers[0], SimProvider)
    deltas, finish = collect(providers[0], GenerationRequest(prompt="hello"))
    assert len(deltas) == 4 and finish.finish_reason == "stop"


def test_each_registry_has_its_own_provider_instances() -> None:
    first = ModelRegistry.parse(SIM_ONLY, "inline").provider("fast")
    second = ModelRegistry.parse(SIM_ONLY, "inline").provider("fast")
    assert first is not second


def test_provider_class_comes_from_the_providers_table() -> None:
    text = (
        "models:\n  local: {provider: llamacpp}\n"
        "  remote: {provider: openai, params: {model: m, base_url: 'http://127.0.0.1:1/v1'}}\n"
    )
    registry = ModelRegistry.parse(text, "inline")
    assert isinstance(registry.provider("local"), LlamaCppProvider)
    assert isinstance(registry.provider("remote"), OpenAIProvider)


def test_env_references_in_params_are_interpolated() -> None:
    environ = {"HOST": "10.0.0.7", "EMPTY": ""}
    params = {
        "url": "http://${HOST}:${PORT:-8000}/v1",
        "nested": {"list": ["${HOST}", 3]},
        "unset": "${NOPE}",
        "empty_uses_default": "${EMPTY:-fallback}",
    }
    assert interpolate(params, environ) == {
        "url": "http://10.0.0.7:8000/v1",
        "nested": {"list": ["10.0.0.7", 3]},
        "unset": "",
        "empty_uses_default": "fallback",
    }


def test_api_key_is_read_from_the_providers_default_env_var() -> None:
    text = "models:\n  gpt: {provider: openai, params: {model: gpt-4o-mini}}\n"
    registry = ModelRegistry.parse(text, "inline", environ={"OPENAI_API_KEY": "sk-env"})
    assert registry.provider("gpt").params["api_key"] == "sk-env"
    # ...but it is not part of the spec that the models endpoint lists.
    assert "api_key" not in registry.get("gpt").params


def test_explicit_api_key_wins_over_the_environment() -> None:
    text = "models:\n  gpt: {provider: openai, params: {model: m, api_key: '${MY_KEY}'}}\n"
    environ = {"MY_KEY": "sk-file", "OPENAI_API_KEY": "sk-env"}
    registry = ModelRegistry.parse(text, "inline", environ=environ)
    assert registry.provider("gpt").params["api_key"] == "sk-file"


def test_an_sdk_is_imported_only_when_a_model_of_its_provider_is_built() -> None:
    """The API and workers that serve other providers start without the hosted SDKs
    (about 1.8 s of imports); building an OpenAI model brings its SDK in."""
    sdks = ("openai", "anthropic", "langchain_openai", "langchain_anthropic", "torch")
    script = f"""
import sys
import inferq.app, inferq.worker
from inferq.providers.registry import ModelRegistry
ModelRegistry.load()
print(",".join(m for m in {sdks!r} if m in sys.modules))
from inferq.providers.openai import OpenAIProvider
OpenAIProvider(name="x", params={{"model": "m", "base_url": "http://127.0.0.1:9"}}).model
print(",".join(m for m in {sdks!r} if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    before, after = done.stdout.splitlines()
    assert before == ""
    assert after.split(",") == ["openai", "langchain_openai"]
