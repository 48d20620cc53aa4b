"""The model registry: a YAML file that names each model, its provider and parameters.

    models:
      gemma-3-270m:
        provider: llamacpp          # a key of PROVIDERS (of EMBEDDING_PROVIDERS for kind
                                    # embedding)
        kind: chat                  # optional: chat | embedding (default chat)
        description: "..."
        pool: local                 # optional: local | io (default: the provider's)
        max_tokens: 1024            # optional: the most a job may ask for
        context_window: 2048        # optional
        dimensions: 384             # optional, embedding models: the length of a vector
        price:                      # optional: US dollars per million tokens
          input_per_million: 0.15
          output_per_million: 0.60
        params: {n_ctx: 2048}       # given to the provider; "${VAR}" and
                                    # "${VAR:-default}" are read from the environment

Adding a provider is one `ChatModelProvider` subclass (`EmbeddingProvider` for
embeddings), one entry in PROVIDERS (EMBEDDING_PROVIDERS) and one registry entry.
Besides `config.py`, this is the one module that reads the environment:
for `${VAR}` in params and for API keys (`api_key_env`, else the provider's default).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from inferq.errors import InvalidRequest, UnknownModel
from inferq.providers.anthropic import AnthropicProvider
from inferq.providers.base import ChatModelProvider
from inferq.providers.embeddings import (
    EmbeddingProvider,
    OpenAIEmbeddingProvider,
    SentenceTransformersProvider,
)
from inferq.providers.llamacpp import LlamaCppProvider
from inferq.providers.openai import OpenAIProvider
from inferq.providers.sim import SimProvider

log = logging.getLogger(__name__)

PROVIDERS: dict[str, type[ChatModelProvider]] = {
    "llamacpp": LlamaCppProvider,
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "sim": SimProvider,
}
# A separate table: one provider name (openai) can serve both kinds.
EMBEDDING_PROVIDERS: dict[str, type[EmbeddingProvider[Any]]] = {
    "sentence_transformers": SentenceTransformersProvider,
    "openai": OpenAIEmbeddingProvider,
}

Pool = Literal["local", "io"]
ModelKind = Literal["chat", "embedding"]
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RegistryError(ValueError):
    """The registry file cannot be used; the message names the file and the problem."""


class ModelSpec(BaseModel):
    """One model of the registry."""

    model_config = ConfigDict(frozen=True)

    name: str
    provider: str
    pool: Pool
    kind: ModelKind = "chat"
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    max_tokens: int | None = None
    context_window: int | None = None
    fallbacks: tuple[str, ...] = ()
    timeout_seconds: float | None = None
    retry: RetrySettings | None = None
    breaker_endpoint: str | None = None
    dimensions: int | None = None
    price: Price | None = None

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """What this many tokens cost at the model's price; None if it has none."""
        if self.price is None:
            return None
        p = self.price
        spent = (prompt_tokens or 0) * p.input_per_million
        return (spent + (completion_tokens or 0) * p.output_per_million) / 1_000_000

    @property
    def endpoint(self) -> str:
        """What the circuit breaker tracks: the upstream server, else the model itself;
        for a model run in the worker process, the model on this host: one host's broken
        file must not open the circuit of the hosts whose copy works."""
        if self.breaker_endpoint:
            return self.breaker_endpoint
        base_url = self.params.get("base_url")
        if base_url:
            return f"{self.provider}:{base_url}"
        provider = PROVIDERS.get(self.provider)
        if self.kind == "chat" and provider is not None and provider.in_process:
            return f"{self.provider}:{self.name}@{socket.gethostname()}"
        return f"{self.provider}:{self.name}"


class Price(BaseModel):
    """US dollars per million tokens in and out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: float = Field(default=0.0, ge=0)
    output_per_million: float = Field(default=0.0, ge=0)


class RetrySettings(BaseModel):
    """Per-model overrides of the retry policy (unset fields keep the service's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int | None = Field(default=None, ge=1, le=20)
    base_delay: float | None = Field(default=None, ge=0)
    max_delay: float | None = Field(default=None, ge=0)
    max_elapsed: float | None = Field(default=None, gt=0)


class _Entry(BaseModel):
    """One model as written in the file."""

    model_config = ConfigDict(extra="forbid")

    # Before `provider`: which provider table applies depends on it.
    kind: ModelKind = "chat"
    provider: str
    description: str = ""
    pool: Pool | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    max_tokens: int | None = Field(default=None, ge=1)
    context_window: int | None = Field(default=None, ge=1)
    # Models tried in order when this one's attempts are exhausted or its breaker is open.
    fallbacks: list[str] = Field(default_factory=list)
    # Total time a job on this model may take, across attempts and fallbacks.
    timeout_seconds: float | None = Field(default=None, gt=0)
    retry: RetrySettings | None = None
    breaker_endpoint: str | None = None
    dimensions: int | None = Field(default=None, ge=1)
    price: Price | None = None

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str, info: ValidationInfo) -> str:
        table = _providers_of(info.data.get("kind", "chat"))
        if value not in table:
            raise ValueError(f"unknown provider {value!r}; known: {', '.join(table)}")
        return value


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, _Entry] = Field(min_length=1)


class ModelRegistry:
    """Model specs by name, and one provider instance per model, built on first use."""

    def __init__(
        self, specs: Mapping[str, ModelSpec], environ: Mapping[str, str] | None = None
    ) -> None:
        self._specs = dict(specs)
        self._environ = os.environ if environ is None else environ
        self._providers: dict[str, ChatModelProvider] = {}
        self._embedders: dict[str, EmbeddingProvider[Any]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, path: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> ModelRegistry:
        """Read a registry file; None reads the one shipped with inferq."""
        env = os.environ if environ is None else environ
        if path is None:
            text = resources.files("inferq").joinpath("models.yaml").read_text(encoding="utf-8")
            return cls.parse(text, "the shipped models.yaml", env)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RegistryError(f"cannot read model registry {path}: {exc}") from exc
        return cls.parse(text, str(path), env)

    @classmethod
    def parse(
        cls, text: str, source: str, environ: Mapping[str, str] | None = None
    ) -> ModelRegistry:
        """Build a registry from YAML text; `source` names it in errors."""
        env = os.environ if environ is None else environ
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RegistryError(f"invalid model registry {source}: not YAML: {exc}") from exc
        try:
            parsed = _File.model_validate(data)
        except ValidationError as exc:
            raise RegistryError(f"invalid model registry {source}: {_problems(exc)}") from exc
        specs = {name: _spec(name, entry, env) for name, entry in parsed.models.items()}
        for spec in specs.values():
            _check_params(spec, source)
            for fallback in spec.fallbacks:
                other = specs.get(fallback)
                if other is None or fallback == spec.name or other.kind != spec.kind:
                    problem = (
                        f"models.{spec.name}.fallbacks: {fallback!r} is not another model "
                        f"of kind {spec.kind}"
                    )
                    raise RegistryError(f"invalid model registry {source}: {problem}")
        return cls(specs, env)

    def get(self, name: str, kind: ModelKind | None = None) -> ModelSpec:
        """The model's spec; with `kind`, a model of another kind is an InvalidRequest."""
        try:
            spec = self._specs[name]
        except KeyError:
            known = ", ".join(self._specs)
            raise UnknownModel(f"unknown model {name!r}; known models: {known}") from None
        if kind is not None and spec.kind != kind:
            raise InvalidRequest(
                f"model {name!r} is {_A_MODEL_OF[spec.kind]}, not {_A_MODEL_OF[kind]}"
            )
        return spec

    def pool_of(self, name: str, default: str = "io") -> str:
        """The pool whose queues take the model's jobs; `default` for a model no longer
        in the registry (a job queued before the file changed)."""
        spec = self._specs.get(name)
        return spec.pool if spec is not None else default

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def provider(self, name: str) -> ChatModelProvider:
        """The model's provider, created once per registry and shared by all threads."""
        spec = self.get(name, kind="chat")
        with self._lock:
            provider = self._providers.get(name)
            if provider is None:
                provider = PROVIDERS[spec.provider](name=name, params=self._params(spec))
                self._providers[name] = provider
            return provider

    def embedder(self, name: str) -> EmbeddingProvider[Any]:
        """The embedding model's provider, created once per registry, shared by all threads."""
        spec = self.get(name, kind="embedding")
        with self._lock:
            embedder = self._embedders.get(name)
            if embedder is None:
                cls = EMBEDDING_PROVIDERS[spec.provider]
                embedder = cls(name=name, params=self._params(spec))
                self._embedders[name] = embedder
            return embedder

    def build(self, pool: str, strict: bool) -> None:
        """Build every model of `pool` now. A worker calls this at start: a local model's
        weights load, and the SDK modules and clients are in place before it freezes its
        start-up heap. Built on a first job, they stayed in every full pass of the garbage
        collector: 40-50 ms pauses of a worker, one every ~10 s at 100 jobs/s. A model
        that cannot be built (no API key) raises if `strict`, else it is logged and fails
        its jobs as it would have."""
        for spec in self.specs():
            if spec.pool != pool:
                continue
            try:
                if spec.kind == "embedding":
                    _ = self.embedder(spec.name).model
                else:
                    _ = self.provider(spec.name).model
            except Exception as exc:
                if strict:
                    raise
                log.warning("model %s: not built at start (%s)", spec.name, exc)

    def close(self) -> None:
        """Release every provider created so far."""
        with self._lock:
            providers, self._providers = list(self._providers.values()), {}
            embedders, self._embedders = list(self._embedders.values()), {}
        for provider in providers:
            provider.close()
        for embedder in embedders:
            embedder.close()

    def _params(self, spec: ModelSpec) -> dict[str, Any]:
        # The key is looked up here, not at load, so it never sits in a listed spec.
        params = dict(spec.params)
        env_name = params.get("api_key_env") or _provider_class(spec).api_key_env
        if not params.get("api_key") and env_name:
            params["api_key"] = self._environ.get(env_name)
        return params


def _spec(name: str, entry: _Entry, environ: Mapping[str, str]) -> ModelSpec:
    return ModelSpec(
        name=name,
        provider=entry.provider,
        pool=entry.pool or _default_pool(entry.kind, entry.provider),
        kind=entry.kind,
        description=entry.description,
        params=interpolate(entry.params, environ),
        max_tokens=entry.max_tokens,
        context_window=entry.context_window,
        fallbacks=tuple(entry.fallbacks),
        timeout_seconds=entry.timeout_seconds,
        retry=entry.retry,
        breaker_endpoint=entry.breaker_endpoint,
        dimensions=entry.dimensions,
        price=entry.price,
    )


def _check_params(spec: ModelSpec, source: str) -> None:
    try:
        _provider_class(spec).check_params(spec.params)
    except ValueError as exc:  # pydantic's ValidationError is one
        problem = f"models.{spec.name}.params: {exc}"
        raise RegistryError(f"invalid model registry {source}: {problem}") from exc


def _default_pool(kind: ModelKind, provider: str) -> Pool:
    return "local" if _providers_of(kind)[provider].default_pool == "local" else "io"


_A_MODEL_OF: dict[str, str] = {"chat": "a chat model", "embedding": "an embedding model"}


def _providers_of(
    kind: ModelKind,
) -> Mapping[str, type[ChatModelProvider | EmbeddingProvider[Any]]]:
    return EMBEDDING_PROVIDERS if kind == "embedding" else PROVIDERS


def _provider_class(spec: ModelSpec) -> type[ChatModelProvider | EmbeddingProvider[Any]]:
    return _providers_of(spec.kind)[spec.provider]


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string inside `value`.

    An unset (or empty) variable without a default becomes "": an optional param reads
    that as "not given" (a record path, a key the registry then looks up).
    """
    if isinstance(value, str):
        return _ENV_REFERENCE.sub(lambda m: environ.get(m[1]) or m[2] or "", value)
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    return value


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'top level'}: {error['msg']}"
        for error in exc.errors()
    )
