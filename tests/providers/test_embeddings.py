"""Embedding providers: the real all-MiniLM-L6-v2 in process, an OpenAI-compatible server
(inferq's own /v1/embeddings), and how the registry tells embedding models from chat ones."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inferq.errors import InvalidRequest, ProviderRejected, ProviderUnavailable
from inferq.providers.embeddings import (
    OpenAIEmbeddingProvider,
    SentenceTransformersProvider,
)
from inferq.providers.registry import ModelRegistry, RegistryError
from tests.conftest import Service
from tests.embedding_support import assert_close
from tests.embedding_support import minilm as direct_minilm
from tests.providers.support import free_port

TESTS = Path(__file__).resolve().parents[1]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture
def minilm() -> SentenceTransformersProvider:
    return direct_minilm()


def test_minilm_vectors_have_384_dimensions_and_unit_length(
    minilm: SentenceTransformersProvider,
) -> None:
    result = minilm.embed(["The quick brown fox jumps over the lazy dog.", "Hello, world!"])
    assert len(result.vectors) == 2
    for vector in result.vectors:
        assert len(vector) == 384
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-4)


def test_similar_sentences_score_a_higher_cosine_than_unrelated_ones(
    minilm: SentenceTransformersProvider,
) -> None:
    cat, kitten, markets = minilm.embed(
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "The central bank raised interest rates again.",
        ]
    ).vectors
    assert cosine(cat, kitten) > 0.6
    assert cosine(cat, kitten) > cosine(cat, markets) + 0.4
    assert cosine(kitten, markets) < 0.2


def test_the_same_text_gets_the_same_vector_whatever_it_is_batched_with(
    minilm: SentenceTransformersProvider,
) -> None:
    text = "Embeddings should not depend on their neighbours."
    alone = minilm.embed([text]).vectors[0]
    again = minilm.embed([text]).vectors[0]
    padded = minilm.embed(["a", "a far longer sentence that makes the batch pad " * 5, text])
    assert alone == again
    assert_close(alone, padded.vectors[2])


def test_tokens_are_counted_per_input_as_the_model_reads_them(
    minilm: SentenceTransformersProvider,
) -> None:
    result = minilm.embed(["hello world", "word " * 1000])
    # [CLS] hello world [SEP]; the long input is cut where the model cuts it (256).
    assert result.input_tokens == [4, 256]
    assert result.prompt_tokens == 260


def test_concurrent_calls_share_one_model_and_agree(minilm: SentenceTransformersProvider) -> None:
    texts = [f"sentence number {i}" for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: minilm.embed([t]).vectors[0], texts))
    together = minilm.embed(texts).vectors
    for one, batched in zip(results, together, strict=True):
        assert_close(one, batched)


def test_the_bundled_model_loads_with_no_hub_reachable(tmp_path: Path) -> None:
    # A fresh process, an empty cache, and a hub address where nothing listens: loading
    # must not need the network, and nobody exported HF_HUB_OFFLINE for it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {"HF_HOME": str(tmp_path), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    script = (
        "from inferq.providers.embeddings import SentenceTransformersProvider as P\n"
        "print(len(P(name='m').embed(['offline']).vectors[0]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "384"


def test_a_missing_model_directory_is_refused_when_the_registry_loads(tmp_path: Path) -> None:
    text = (
        "models:\n  e:\n    kind: embedding\n    provider: sentence_transformers\n"
        f"    params: {{path: '{tmp_path / 'nothing'}'}}\n"
    )
    with pytest.raises(RegistryError, match=r"models\.e\.params: path .* is not a directory"):
        ModelRegistry.parse(text, "inline")


# --- the registry ---------------------------------------------------------------------


def test_the_shipped_registry_serves_minilm_as_an_embedding_model() -> None:
    spec = ModelRegistry.load().get("all-minilm-l6-v2")
    assert (spec.kind, spec.provider, spec.pool) == ("embedding", "sentence_transformers", "io")
    assert spec.dimensions == 384


def test_registry_builds_one_embedder_per_model_shared_across_threads() -> None:
    registry = ModelRegistry.load(TESTS / "models.yaml", environ={})
    spec = registry.get("all-minilm-l6-v2")
    assert (spec.kind, spec.pool, spec.dimensions) == ("embedding", "io", 384)
    assert registry.get("sim").kind == "chat"
    with ThreadPoolExecutor(8) as pool:
        embedders = list(pool.map(lambda _: registry.embedder("all-minilm-l6-v2"), range(16)))
    assert all(e is embedders[0] for e in embedders)
    assert isinstance(embedders[0], SentenceTransformersProvider)


def test_chat_and_embedding_models_are_not_interchangeable() -> None:
    registry = ModelRegistry.load(TESTS / "models.yaml", environ={})
    with pytest.raises(InvalidRequest, match="is an embedding model, not a chat model"):
        registry.provider("all-minilm-l6-v2")
    with pytest.raises(InvalidRequest, match="is a chat model, not an embedding model"):
        registry.embedder("sim")


def test_embedding_providers_have_their_own_table() -> None:
    text = (
        "models:\n"
        "  chat: {provider: openai, params: {model: m}}\n"
        "  vectors: {kind: embedding, provider: openai, params: {model: m}}\n"
    )
    registry = ModelRegistry.parse(text, "inline", environ={"OPENAI_API_KEY": "sk-x"})
    assert isinstance(registry.embedder("vectors"), OpenAIEmbeddingProvider)
    assert registry.embedder("vectors").params["api_key"] == "sk-x"
    with pytest.raises(RegistryError, match="unknown provider 'sim'; known: sentence_"):
        ModelRegistry.parse("models:\n  e: {kind: embedding, provider: sim}\n", "inline")
    with pytest.raises(RegistryError, match="unknown provider 'sentence_transformers'"):
        ModelRegistry.parse("models:\n  c: {provider: sentence_transformers}\n", "inline")


# --- OpenAI-compatible upstreams ------------------------------------------------------


def test_openai_provider_gets_the_same_vectors_and_usage_from_a_compatible_server(
    service: Service, minilm: SentenceTransformersProvider
) -> None:
    upstream = OpenAIEmbeddingProvider(
        name="remote-minilm",
        params={
            "model": "all-minilm-l6-v2",
            "base_url": f"{service.url}/v1",
            "api_key": service.key,
        },
    )
    texts = ["first text", "a second, longer text"]
    remote = upstream.embed(texts)
    local = minilm.embed(texts)
    assert remote.prompt_tokens == local.prompt_tokens
    for got, expected in zip(remote.vectors, local.vectors, strict=True):
        assert_close(got, expected)


def test_openai_provider_reports_a_refusal_as_not_retryable(service: Service) -> None:
    upstream = OpenAIEmbeddingProvider(
        name="remote",
        params={"model": "no-such-model", "base_url": f"{service.url}/v1", "api_key": service.key},
    )
    with pytest.raises(ProviderRejected, match="404") as raised:
        upstream.embed(["hello"])
    assert not raised.value.retryable


def test_openai_provider_reports_an_unreachable_server_as_retryable() -> None:
    upstream = OpenAIEmbeddingProvider(
        name="remote", params={"model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    )
    with pytest.raises(ProviderUnavailable) as raised:
        upstream.embed(["hello"])
    assert raised.value.retryable
