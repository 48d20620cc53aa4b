"""`inferq serve`: the one-command deployment of API, workers and, if needed, Redis."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inferq.config import Settings
from inferq.db.engine import create_async
from inferq.db.migrate import upgrade
from inferq.embedded_redis import EmbeddedRedis
from inferq.keys import KeyStore
from inferq.supervisor import ChildSpec, Supervisor


@dataclass(frozen=True)
class FirstKey:
    """The key created on the first start; its plain text exists only here."""

    key: str | None


async def prepare_keys(settings: Settings) -> FirstKey:
    """Register the bootstrap key; create a first key if there is none at all."""
    engine = create_async(settings.resolved_database_url)
    try:
        keys = KeyStore(engine)
        if settings.bootstrap_key is not None:
            await keys.ensure(settings.bootstrap_key.get_secret_value(), "bootstrap", admin=True)
        if await keys.count() == 0:
            _, plain = await keys.create("first key (inferq serve)", admin=True)
            return FirstKey(plain)
        return FirstKey(None)
    finally:
        await engine.dispose()


def children(settings: Settings, env: dict[str, str]) -> list[ChildSpec]:
    """The processes `serve` supervises: one API, and the configured workers."""
    python = [sys.executable, "-m", "inferq"]
    specs = [ChildSpec("api", [*python, "api"], env)]
    for i in range(settings.serve_io_workers):
        specs.append(ChildSpec(f"worker-io-{i}", [*python, "worker", "--pool", "io"], env))
    for i in range(settings.serve_local_workers):
        specs.append(ChildSpec(f"worker-local-{i}", [*python, "worker", "--pool", "local"], env))
    return specs


def fresh_metrics_dir(settings: Settings) -> Path:
    """Where every child writes its metrics for the API to merge; emptied at start so a
    previous run's counters do not add up with this one's."""
    path = (settings.metrics_multiproc_dir or settings.data_dir / "metrics").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def serve(settings: Settings, say: Callable[[str], None]) -> int:
    """Run everything until SIGINT/SIGTERM; returns an exit code."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir)
    env = dict(os.environ)
    env["INFERQ_DATA_DIR"] = str(settings.data_dir.resolve())
    env["INFERQ_DATABASE_URL"] = settings.resolved_database_url
    env.setdefault("INFERQ_LOG_FORMAT", settings.log_format or "console")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(fresh_metrics_dir(settings))
    try:
        if embedded is not None:
            env["INFERQ_REDIS_URL"] = embedded.start()
            say(f"embedded Redis at {env['INFERQ_REDIS_URL']} (files in {settings.data_dir}/redis)")
        upgrade(settings.resolved_database_url)
        first = asyncio.run(prepare_keys(settings))
        _announce(settings, first, say)
        supervisor = Supervisor(children(settings, env), on_event=say)
        supervisor.run()
        return 0
    finally:
        if embedded is not None:
            embedded.stop()


def _announce(settings: Settings, first: FirstKey, say: Callable[[str], None]) -> None:
    url = settings.resolved_api_url
    say(f"inferq is starting at {url}  (docs: {url}/docs)")
    if first.key:
        say("API key created on first start (shown once, store it now):")
        say(f"  {first.key}")
        key = first.key
    else:
        say("API keys already exist: use yours, or `inferq keys create`.")
        key = "$INFERQ_API_KEY"
    say("Try:")
    say(
        f"  curl -s {url}/v1/jobs -H 'Authorization: Bearer {key}' "
        "-H 'Content-Type: application/json' "
        '-d \'{"model": "gemma-3-270m", "prompt": "The capital of France is", '
        '"max_tokens": 32}\''
    )
    say(f"  curl -s {url}/v1/jobs/<id> -H 'Authorization: Bearer {key}'")
    say(f"Metrics (queue depth, TTFT, cost per model): {url}/metrics; live view: inferq top")
