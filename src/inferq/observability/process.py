"""Per-process observability setup: what the API's lifespan and a worker's start call."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from celery import signals

from inferq.config import Settings
from inferq.observability import metrics, propagation, tracing


def _keep_our_logging(**_: Any) -> None:
    """Connected to Celery's `setup_logging`: Celery then leaves logging as configured."""


def setup_worker(settings: Settings, engine: sa.Engine, pool: str) -> None:
    signals.setup_logging.connect(_keep_our_logging, weak=False)
    propagation.install()
    if tracing.setup(settings, f"inferq-worker-{pool}"):
        tracing.instrument_engine(engine)
    metrics.serve_worker_metrics(settings)


def setup_api(settings: Settings, app: Any) -> None:
    """Before the app serves: trace it if tracing is on, tag what it publishes."""
    propagation.install()
    if tracing.setup(settings, "inferq-api"):
        tracing.instrument_app(app)
        tracing.declare_run_task()
