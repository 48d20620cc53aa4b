"""The FastAPI application factory; its lifespan creates the shared clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from celery import Celery
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq import __version__
from inferq.admission import Admission, QueueDepth
from inferq.api import openapi, problems, router
from inferq.api.guard import RequestGuard
from inferq.config import Settings, get_settings
from inferq.conversations import ConversationStore
from inferq.db.engine import create_async
from inferq.heap import freeze_startup_heap
from inferq.idempotency import Idempotency
from inferq.jobs.store import JobStore
from inferq.keys import KeyStore
from inferq.observability import tracing
from inferq.observability.http import RequestObservability
from inferq.observability.process import setup_api
from inferq.providers.registry import ModelRegistry
from inferq.queue import RedisPublisher, make_celery
from inferq.redis_clients import async_client


@dataclass
class Services:
    """The API process's shared clients, created by the lifespan and closed with it."""

    settings: Settings
    engine: AsyncEngine
    redis: aioredis.Redis
    celery: Celery
    # Publishes run_job messages without Celery when the broker is Redis (else None).
    publisher: RedisPublisher | None
    registry: ModelRegistry
    jobs: JobStore
    keys: KeyStore
    admission: Admission
    queue_depth: QueueDepth
    idempotency: Idempotency
    conversations: ConversationStore
    # Tasks that must outlive the request that started them (kept so they are not GC'd).
    background: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def create(cls, settings: Settings) -> Services:
        engine = create_async(settings.resolved_database_url, settings.database_pool_size)
        redis = async_client(
            settings.resolved_redis_url,
            max_connections=2048,
            socket_connect_timeout=1,
            # Above the longest XREAD BLOCK (2 s) the stream readers issue.
            socket_timeout=15,
            health_check_interval=30,
        )
        jobs = JobStore(engine)
        if tracing.is_on():
            tracing.instrument_engine(engine.sync_engine)
        return cls(
            settings=settings,
            engine=engine,
            redis=redis,
            celery=make_celery(settings),
            publisher=_publisher(settings, redis),
            registry=ModelRegistry.load(settings.models_file),
            jobs=jobs,
            keys=KeyStore(engine, cache_seconds=settings.key_cache_seconds),
            admission=Admission(redis),
            queue_depth=QueueDepth(jobs.count_queued),
            idempotency=Idempotency(redis, pending_seconds=int(settings.sync_wait_seconds) + 60),
            conversations=ConversationStore(engine),
        )

    async def close(self) -> None:
        if self.publisher is not None and self.publisher.client is not self.redis:
            await self.publisher.close()
        await self.queue_depth.close()
        await self.keys.close()
        await self.redis.aclose()
        await self.engine.dispose()
        self.celery.close()


def _publisher(settings: Settings, redis: aioredis.Redis) -> RedisPublisher | None:
    if not settings.broker_is_redis():
        return None
    if settings.resolved_broker_url == settings.resolved_redis_url:
        return RedisPublisher(redis)
    client = async_client(
        settings.resolved_broker_url,
        max_connections=512,
        socket_connect_timeout=1,
        socket_timeout=5,
    )
    return RedisPublisher(client)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; `uvicorn --factory inferq.app:create_app` serves it."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.create(settings)
        if settings.bootstrap_key is not None:
            await services.keys.ensure(
                settings.bootstrap_key.get_secret_value(), "bootstrap", admin=True
            )
        app.state.services = services
        freeze_startup_heap()
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(
        title="inferq",
        version=__version__,
        summary="Asynchronous LLM inference: submit a job, poll it, stream it.",
        lifespan=lifespan,
    )
    problems.install(app)
    openapi.install(app)
    # An upload may be as large as a file may be, plus its multipart framing.
    uploads = {"/v1/files": settings.max_file_bytes + 64 * 1024}
    app.add_middleware(RequestGuard, max_bytes=settings.max_body_bytes, overrides=uploads)
    # Outermost: every answer, the guard's refusals included, has a request id and is counted.
    app.add_middleware(RequestObservability, metrics=settings.request_metrics)
    app.include_router(router)
    setup_api(settings, app)
    return app
