"""Engines for the job store: async for the API, sync for worker threads."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _with_driver(url: str, drivers: dict[str, str]) -> str:
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    backend = parsed.get_backend_name()
    if backend not in drivers:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:// or postgresql://")
    return parsed.set(drivername=drivers[backend]).render_as_string(hide_password=False)


def async_url(url: str) -> str:
    """The URL with the async driver (aiosqlite, asyncpg)."""
    return _with_driver(url, _ASYNC_DRIVERS)


def sync_url(url: str) -> str:
    """The URL with the sync driver (sqlite3, psycopg)."""
    return _with_driver(url, _SYNC_DRIVERS)


def _json_dumps(value: Any) -> str:
    # orjson, not the stdlib: the request and metadata columns are JSON, and the
    # stdlib's encoder was a few percent of the API's CPU per submitted job.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# JSON columns in and out of every engine.
_JSON = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # API and workers are separate processes writing one file: WAL lets readers go on
    # while one writes, and busy_timeout makes writers wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_async(url: str, pool_size: int = 4) -> AsyncEngine:
    """The API's engine (and short-lived commands'), `pool_size` connections at most."""
    full = async_url(url)
    if full.startswith("sqlite"):
        engine = create_async_engine(full, **_JSON)
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No overflow: an overflow connection is closed when returned, and reopening one per
    # request (TCP, TLS negotiation, auth) cost more than the query; a fixed pool also
    # keeps the process's share of the server's max_connections known. No pre-ping (a
    # round trip per request): a connection the server dropped fails its request with a
    # 503 and is discarded, with the rest of the pool, on that error.
    return create_async_engine(
        full, pool_size=pool_size, max_overflow=0, pool_recycle=3600, **_JSON
    )


def create_sync(url: str, pool_size: int = 20) -> sa.Engine:
    """A worker's engine, shared by its threads, `pool_size` connections at most."""
    full = sync_url(url)
    if full.startswith("sqlite"):
        # SQLite takes one writer at a time: with a connection per thread, dozens of
        # threads contend for the file lock and back off in sleeps of up to 100 ms, so a
        # finished job could wait seconds to be saved. Threads queue for two connections
        # here instead, handed over without sleeping.
        engine = sa.create_engine(full, pool_size=2, max_overflow=0, pool_timeout=60, **_JSON)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping (a SELECT 1 per checkout): a connection found dead raises, SQLAlchemy
    # then recycles the whole pool, and the job's thread waits for the database (see
    # JobRunner). Threads beyond `pool_size` wait for a connection rather than open one.
    return sa.create_engine(full, pool_size=pool_size, max_overflow=0, **_JSON)
