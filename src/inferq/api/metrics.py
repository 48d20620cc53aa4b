"""`GET /metrics`: Prometheus exposition (for now the circuit breakers' state).

Unauthenticated like the health routes, as Prometheus scrapers expect; it names provider
endpoints and counts, never keys or prompts. Breaker state lives in Redis, so it is read
at scrape time and every API process reports the same shared truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inferq.api.deps import ServicesDep
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


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Breakers(await all_states(services.redis)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
