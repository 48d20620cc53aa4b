"""Fixtures that start real services: Redis, a database, the API on a port, workers."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from inferq.db.migrate import upgrade
from inferq.embedded_redis import EmbeddedRedis

TESTS = Path(__file__).resolve().parent
LOCAL_REDIS = "redis://127.0.0.1:6379"
# How long a service under test trusts a key lookup (the default is 5 s).
KEY_CACHE_SECONDS = 1.0
MODELS = TESTS / "models.yaml"


@functools.cache
def models_without_local_embeddings() -> Path:
    """tests/models.yaml less the embedding models a worker loads in process: an io worker
    that loads all-MiniLM (PyTorch, sentence-transformers) starts in 6 s of CPU instead of
    2, and most tests start workers of their own that never embed. The shared `service`,
    which the embedding tests use, keeps them."""
    registry = yaml.safe_load(MODELS.read_text())
    registry["models"] = {
        name: spec
        for name, spec in registry["models"].items()
        if spec.get("provider") != "sentence_transformers"
    }
    path = Path(tempfile.mkdtemp(prefix="inferq-tests-")) / "models.yaml"
    path.write_text(yaml.safe_dump(registry))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """127.0.0.1:6379 when it answers, else an embedded Redis (URL without a db number)."""
    if reachable("127.0.0.1", 6379):
        yield LOCAL_REDIS
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = embedded.start()
    try:
        yield url.rsplit("/", 1)[0]
    finally:
        embedded.stop()


class RedisDatabases:
    """Hands out empty Redis databases so services under test never share queues.

    A database is claimed with SET NX, so test sessions running side by side on one
    Redis server (a developer's and CI's) never get the same one.
    """

    CLAIM = "inferq-test:claim"

    def __init__(self, base: str) -> None:
        self.base = base
        self.token = secrets.token_hex(8)
        self.claimed: list[str] = []

    def allocate(self) -> str:
        for db in range(1, 16):
            url = f"{self.base}/{db}"
            client = redis.Redis.from_url(url)
            if client.set(self.CLAIM, self.token, nx=True, ex=3600):
                client.flushdb()
                client.set(self.CLAIM, self.token, ex=3600)
                self.claimed.append(url)
                return url
        raise RuntimeError("every Redis database is claimed by another test session")

    def release(self) -> None:
        for url in self.claimed:
            client = redis.Redis.from_url(url)
            if client.get(self.CLAIM) == self.token.encode():
                client.flushdb()


@pytest.fixture(scope="session")
def redis_dbs(redis_base: str) -> Iterator[RedisDatabases]:
    dbs = RedisDatabases(redis_base)
    try:
        yield dbs
    finally:
        dbs.release()


@pytest.fixture
def redis_url(redis_dbs: RedisDatabases) -> Iterator[str]:
    """An empty Redis database for one test, emptied and given back after it (a test
    session has fifteen, shared by every test and the services they start)."""
    url = redis_dbs.allocate()
    yield url
    with contextlib.suppress(redis.RedisError):
        redis.Redis.from_url(url).flushdb()


def postgres_url() -> str | None:
    return os.environ.get("INFERQ_TEST_DATABASE_URL") or None


def fresh_postgres(admin_url: str) -> tuple[str, str]:
    import sqlalchemy as sa

    from inferq.db.engine import sync_url

    name = f"inferq_test_{secrets.token_hex(4)}"
    engine = sa.create_engine(sync_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name, name


def drop_postgres(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    from inferq.db.engine import sync_url

    engine = sa.create_engine(sync_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite database (function scope, for tests of the store itself)."""
    url = f"sqlite:///{tmp_path / 'inferq.db'}"
    upgrade(url)
    yield url


class Service:
    """A running inferq: the API on a real port and worker processes."""

    def __init__(
        self,
        root: Path,
        redis_url: str,
        database_url: str,
        broker_url: str | None,
        extra_env: dict[str, str] | None = None,
        models_file: Path | None = None,
    ) -> None:
        self.root = root
        self.key = "iq_test_" + secrets.token_urlsafe(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sim_record = root / "sim-completions.jsonl"
        self.env = {
            **os.environ,
            "INFERQ_DATA_DIR": str(root),
            "INFERQ_REDIS_URL": redis_url,
            "INFERQ_DATABASE_URL": database_url,
            "INFERQ_MODELS_FILE": str(models_file or models_without_local_embeddings()),
            "INFERQ_BOOTSTRAP_KEY": self.key,
            "INFERQ_PORT": str(self.port),
            "INFERQ_TEST_SIM_RECORD": str(self.sim_record),
            "INFERQ_WORKER_TTL_SECONDS": "3",
            "INFERQ_REAPER_INTERVAL_SECONDS": "1",
            "INFERQ_LOG_LEVEL": "INFO",
            "INFERQ_SSE_PING_SECONDS": "1",
            "INFERQ_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
        }
        if broker_url:
            self.env["INFERQ_BROKER_URL"] = broker_url
        self.env.update(extra_env or {})
        self.database_url = database_url
        self.redis_url = redis_url
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "inferq", *args], env=self.env, stdout=log, stderr=log
        )
        self.processes.append(process)
        return process

    def start_api(self) -> None:
        upgrade(self.database_url)
        self._spawn("api", "api")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("API did not start:\n" + (self.root / "api.log").read_text()[-3000:])

    def start_extra_api(self) -> str:
        """A second API process on its own port, sharing everything else."""
        port = free_port()
        self._spawn(f"api-{port}", "api", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(url), timeout=30)
        return url

    def create_key(self, *options: str) -> str:
        """A new API key made with `inferq keys create`, as an operator would."""
        out = subprocess.run(
            [sys.executable, "-m", "inferq", "keys", "create", *options],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.strip().splitlines()[-1]

    def start_worker(
        self, pool: str = "io", concurrency: int | None = None
    ) -> subprocess.Popen[bytes]:
        args = ["worker", "--pool", pool]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        process = self._spawn(f"worker-{pool}-{len(self.workers)}", *args)
        self.workers.append(process)
        return process

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key or self.key}"}, timeout=30
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        # Empty the database, claim included, so a later service of this run reuses it.
        with contextlib.suppress(redis.RedisError):  # a test may have taken its Redis down
            redis.Redis.from_url(self.redis_url).flushdb()

    def redis_stream_length(self, job_id: str) -> int:
        from inferq import redis_keys

        return int(redis.Redis.from_url(self.redis_url).xlen(redis_keys.job_stream(job_id)))

    def queue_is_empty(self) -> bool:
        from inferq.queue import POOLS, pool_queues

        client = redis.Redis.from_url(self.redis_url)
        return all(client.llen(q) == 0 for pool in POOLS for q in pool_queues(pool))

    def top_once(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`inferq top --once` against this service, wide enough for every column."""
        return subprocess.run(
            [sys.executable, "-m", "inferq", "top", "--once"],
            env={**self.env, "COLUMNS": "160"},
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in self.root.glob("*.log"))


def start_service(
    tmp: Path,
    redis_url: str,
    database_url: str,
    broker_url: str | None = None,
    workers: tuple[tuple[str, int], ...] = (("io", 32), ("local", 1)),
    extra_env: dict[str, str] | None = None,
    models_file: Path | None = None,
) -> Service:
    service = Service(tmp, redis_url, database_url, broker_url, extra_env, models_file)
    service.start_api()
    for pool, concurrency in workers:
        service.start_worker(pool, concurrency)
    return service


def wait_for(predicate: object, timeout: float = 60.0, interval: float = 0.1) -> object:
    """Poll `predicate()` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


def database_params() -> list[str]:
    return ["sqlite", "postgres"] if postgres_url() else ["sqlite"]


# Modules that test the HTTP surface (validation, OpenAI shapes, embeddings) run on SQLite
# only: nothing they check depends on the job store, which the other modules run on both
# stores. INFERQ_TEST_ALL_STORES=1 runs them on PostgreSQL too.
STORE_AGNOSTIC = {
    "test_validation.py",
    "test_openai_compat.py",
    "test_embeddings.py",
    "test_openapi.py",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("INFERQ_TEST_ALL_STORES"):
        return
    dropped = [item for item in items if _store_agnostic_on_postgres(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


def _store_agnostic_on_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return (
        item.path.name in STORE_AGNOSTIC
        and callspec is not None
        and callspec.params.get("service") == "postgres"
    )


@pytest.fixture(scope="session", params=database_params())
def service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_dbs: RedisDatabases,
) -> Iterator[Service]:
    """inferq with one io worker and one local-model worker, on SQLite or PostgreSQL."""
    tmp = tmp_path_factory.mktemp("service")
    pg_name = None
    admin = postgres_url()
    if request.param == "postgres" and admin:
        database_url, pg_name = fresh_postgres(admin)
    else:
        database_url = f"sqlite:///{tmp / 'inferq.db'}"
    svc = start_service(tmp, redis_dbs.allocate(), database_url, models_file=MODELS)
    try:
        yield svc
    finally:
        svc.stop()
        if pg_name and admin:
            drop_postgres(admin, pg_name)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
