"""The handler of each kind of job, and the layers a generate job passes through:
retrieval (the collection's documents before its question), the response cache, then
the provider call under retries, fallbacks and the circuit breaker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferq.embedding_jobs import EmbedHandler
from inferq.generation import GenerateHandler
from inferq.resilience.breaker import BreakerConfig, CircuitBreaker
from inferq.response_cache import caching
from inferq.retrieval import DocumentStore, IndexHandler, RetrievingHandler, embedder, splitter

if TYPE_CHECKING:
    from inferq.worker import Handler, WorkerContext


def build_breaker(ctx: WorkerContext) -> CircuitBreaker:
    return CircuitBreaker(ctx.redis, BreakerConfig.from_settings(ctx.settings))


def build_handlers(ctx: WorkerContext) -> dict[str, Handler]:
    """Job kind → handler, for one worker process."""
    settings = ctx.settings
    generate = GenerateHandler(ctx.registry, build_breaker(ctx), settings, ctx.store.add_attempt)
    embed = EmbedHandler(ctx.registry, settings)
    cached = caching(settings, ctx.redis, generate, embed.vector)
    docs, search = DocumentStore(ctx.engine), embedder(embed, settings.rag_embedding_model)
    return {
        "generate": RetrievingHandler(cached, docs, search),
        "embed": embed,
        "index": IndexHandler(docs, search, splitter(settings)),
    }
