"""`GET /metrics`: Prometheus exposition of the API process and the shared state.

Unauthenticated like the health routes, as Prometheus scrapers expect; it names routes,
models, queues and provider endpoints, never keys, job ids or prompts. This process's
own metrics (HTTP, admission) come first; then what is read at scrape time, so every
API process reports the same shared truth: breakers and workers alive from Redis, queue
depth from the broker, queued and running jobs from the database. Under `inferq serve`
(multiprocess mode) the workers' metrics are merged in here too; otherwise each worker
serves its own (see `inferq.observability`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from inferq.api.deps import ServicesDep
from inferq.observability import snapshot
from inferq.resilience.breaker import all_states

router = APIRouter(tags=["health"])
STATES = ("closed", "open", "half_open")


class _Breakers(Collector):
    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "inferq_breaker_state",
            "1 for the state each provider endpoint's breaker is in",
            labels=["endpoint", "state"],
        )
        failures = GaugeMetricFamily(
            "inferq_breaker_window_failures",
            "Failed calls in the breaker's current window",
            labels=["endpoint"],
        )
        for breaker in self.states:
            for name in STATES:
                state.add_metric([breaker["endpoint"], name], float(breaker["state"] == name))
            failures.add_metric([breaker["endpoint"]], float(breaker["failures"]))
        yield state
        yield failures


class _Shared(Collector):
    """Queue depth, live jobs and workers alive, as read for this scrape."""

    def __init__(
        self,
        depths: list[snapshot.QueueDepth],
        live: list[tuple[str, str, int]],
        workers: int,
    ) -> None:
        self.depths, self.live, self.workers = depths, live, workers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "inferq_queue_depth", "Messages waiting in the broker's queue", labels=["queue"]
        )
        for d in self.depths:
            depth.add_metric([f"{d.pool}.{d.priority}"], float(d.depth))
        jobs = GaugeMetricFamily(
            "inferq_jobs", "Jobs now queued or running", labels=["state", "model"]
        )
        for state, model, count in self.live:
            jobs.add_metric([state, model], float(count))
        yield depth
        yield jobs
        yield GaugeMetricFamily(
            "inferq_workers_alive", "Worker processes whose heartbeat is current", self.workers
        )


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    multiproc = services.settings.metrics_multiproc_dir
    if multiproc is not None:
        MultiProcessCollector(registry, str(multiproc))  # type: ignore[no-untyped-call]
    else:
        registry.register(_Own())
    registry.register(_Breakers(await all_states(services.redis)))
    registry.register(
        _Shared(
            await snapshot.queue_depths(
                services.settings,
                services.redis,
                services.celery,
                broker=services.publisher.client if services.publisher else None,
            ),
            await snapshot.live_jobs(services.engine),
            await snapshot.workers_alive(services.redis),
        )
    )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Own(Collector):
    """This process's own metrics (the default registry), inside the scrape's registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()
