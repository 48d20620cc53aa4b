"""Starting the systems under test: Redis, the mock upstream, inferq, and the baselines."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
import yaml

from bench.procs import Fleet, Proc, free_port, wait_http
from bench.upstream import Timing

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SKELETON_DIR = BENCH / "baselines" / "skeleton"
LITELLM_DIR = BENCH / "baselines" / "litellm"
LITELLM_VENV = REPO / ".bench" / "litellm-venv"
UPSTREAM_MODEL = "mock"
# Limits on the benchmark's key: high enough never to bind, so the checks still run.
KEY_LIMITS = ("--rpm", "100000000", "--tpm", "2000000000", "--max-jobs", "10000000")


@dataclass
class Context:
    """What every scenario shares: a work folder, the fleet, Redis and the database."""

    root: Path
    fleet: Fleet
    redis_base: str
    database_url: str | None = None
    log_level: str = "INFO"
    redis_tree: Callable[[], list[Any]] = list
    _dbs: Iterator[int] = field(default_factory=lambda: iter(range(1, 16)))

    def redis_db(self) -> str:
        """A fresh, flushed Redis database URL."""
        url = f"{self.redis_base}/{next(self._dbs)}"
        redis.Redis.from_url(url).flushdb()
        return url

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@contextlib.contextmanager
def redis_server(root: Path, url: str | None) -> Iterator[tuple[str, Callable[[], list[Any]]]]:
    """The given Redis (a URL without a database number), else an embedded one we start.

    Yields the URL and a function giving the server's processes (empty when it is not
    ours), so its CPU can be reported.
    """
    if url:
        yield url.rstrip("/"), list
        return
    from inferq.embedded_redis import EmbeddedRedis

    embedded = EmbeddedRedis(root)
    started = embedded.start()
    pid = embedded.pid

    def tree() -> list[Any]:
        with contextlib.suppress(psutil.Error):
            return [psutil.Process(pid)] if pid else []
        return []

    try:
        yield started.rsplit("/", 1)[0], tree
    finally:
        embedded.stop()


def start_upstream(ctx: Context, timing: Timing = Timing()) -> tuple[str, Proc]:
    """The mock OpenAI-compatible server; returns its base URL (…/v1)."""
    port = free_port()
    proc = ctx.fleet.python(
        "upstream", "-m", "bench.upstream", "--port", str(port),
        "--latency-ms", str(timing.latency_ms), "--first-chunk-ms", str(timing.first_chunk_ms),
        "--chunks", str(timing.chunks), "--chunk-interval-ms", str(timing.chunk_interval_ms),
        cwd=REPO,
    )
    base = f"http://127.0.0.1:{port}/v1"
    wait_http(base + "/models", proc)
    return base, proc


@dataclass
class Inferq:
    url: str
    key: str
    api: Proc
    worker: Proc | None
    database_url: str
    redis_url: str
    env: dict[str, str]

    def trees(self) -> dict[str, Callable[[], list[Any]]]:
        """The API's and the worker's process trees, by name."""
        return _trees("inferq", self.api, self.worker)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "content-type": "application/json"}


def _database(ctx: Context, folder: Path) -> str:
    if ctx.database_url is None or ctx.database_url.startswith("sqlite"):
        return f"sqlite:///{folder / 'inferq.db'}"
    import sqlalchemy as sa

    from inferq.db.engine import sync_url

    name = f"inferq_bench_{secrets.token_hex(4)}"
    engine = sa.create_engine(sync_url(ctx.database_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return ctx.database_url.rsplit("/", 1)[0] + "/" + name


def start_inferq(
    ctx: Context,
    name: str,
    models: dict[str, Any],
    pool: str = "io",
    concurrency: int = 256,
    extra_env: dict[str, str] | None = None,
    with_worker: bool = True,
) -> Inferq:
    """One `inferq api` process and (unless told not to) one `inferq worker` process, on a
    fresh database."""
    folder = ctx.folder(name)
    models_file = folder / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": models}))
    port = free_port()
    redis_url = ctx.redis_db()
    env = {
        **os.environ,
        "INFERQ_DATA_DIR": str(folder),
        "INFERQ_REDIS_URL": redis_url,
        "INFERQ_DATABASE_URL": _database(ctx, folder),
        "INFERQ_MODELS_FILE": str(models_file),
        "INFERQ_PORT": str(port),
        "INFERQ_LOG_LEVEL": ctx.log_level,
        **(extra_env or {}),
    }
    key = _create_key(env)
    api = ctx.fleet.python(f"{name}-api", "-m", "inferq", "api", env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", api)
    worker = ctx.fleet.python(
        f"{name}-worker", "-m", "inferq", "worker", "--pool", pool,
        "--concurrency", str(concurrency), env=env,
    ) if with_worker else None
    return Inferq(url, key, api, worker, env["INFERQ_DATABASE_URL"], redis_url, env)


def _create_key(env: dict[str, str]) -> str:
    """A key made with `inferq keys create` (which also migrates the database)."""
    done = subprocess.run(
        [sys.executable, "-m", "inferq", "keys", "create", "--name", "bench", *KEY_LIMITS],
        env=env, capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"inferq keys create failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def openai_model(upstream_base: str) -> dict[str, Any]:
    """A registry entry for the mock upstream."""
    return {
        "provider": "openai",
        "description": "the benchmark's mock OpenAI-compatible upstream",
        "params": {"model": UPSTREAM_MODEL, "base_url": upstream_base, "timeout_seconds": 30},
        "timeout_seconds": 60,
    }


@dataclass
class Skeleton:
    url: str
    api: Proc
    worker: Proc | None
    redis_url: str

    def trees(self) -> dict[str, Callable[[], list[Any]]]:
        return _trees("skeleton", self.api, self.worker)


def _trees(prefix: str, api: Proc, worker: Proc | None) -> dict[str, Callable[[], list[Any]]]:
    trees = {f"{prefix}-api": api.tree}
    if worker is not None:
        trees[f"{prefix}-worker"] = worker.tree
    return trees


def start_skeleton(ctx: Context, sleep_seconds: float, with_worker: bool = True) -> Skeleton:
    """Seed 001's FastAPI + Celery app: uvicorn, and a Celery worker with its defaults."""
    redis_url = ctx.redis_db()
    env = {**os.environ, "REDIS_URL": redis_url, "SKELETON_SLEEP_SECONDS": str(sleep_seconds)}
    port = free_port()
    api = ctx.fleet.python(
        "skeleton-api", "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", env=env, cwd=SKELETON_DIR,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/docs", api)
    worker = ctx.fleet.python(
        "skeleton-worker", "-m", "celery", "-A", "worker.celery_app", "worker",
        "--loglevel=info", env=env, cwd=SKELETON_DIR,
    ) if with_worker else None
    return Skeleton(url, api, worker, redis_url)


def litellm_available() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").exists()


@dataclass
class LiteLLM:
    url: str
    key: str
    proc: Proc


def start_litellm(ctx: Context, upstream_base: str) -> LiteLLM:
    """The LiteLLM proxy, two worker processes, routing `mock` to the mock upstream; it
    checks a master key on every request, as inferq checks its API keys."""
    config = ctx.folder("litellm") / "config.yaml"
    template = (LITELLM_DIR / "config.yaml").read_text()
    config.write_text(template.replace("${UPSTREAM_BASE}", upstream_base))
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True",
           "LITELLM_MASTER_KEY": "sk-bench-" + secrets.token_hex(24)}
    env.pop("DATABASE_URL", None)
    proc = ctx.fleet.start(
        "litellm",
        [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
         "--port", str(port), "--num_workers", "2"],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/liveliness", proc, timeout=180)
    return LiteLLM(url, env["LITELLM_MASTER_KEY"], proc)


__all__ = [
    "Context",
    "Inferq",
    "LiteLLM",
    "Skeleton",
    "litellm_available",
    "openai_model",
    "redis_server",
    "start_inferq",
    "start_litellm",
    "start_skeleton",
    "start_upstream",
]
