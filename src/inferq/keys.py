"""API keys: made at random, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.db.tables import api_keys
from inferq.jobs.store import utcnow

log = logging.getLogger(__name__)

KEY_PREFIX = "iq_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Limits:
    """Per-key admission limits; None means the service's default."""

    rpm: int | None = None
    tpm: int | None = None
    max_active_jobs: int | None = None


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    admin: bool = False
    limits: Limits = Limits()

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(
            row.id,
            row.name,
            row.prefix,
            row.created_at,
            row.revoked_at,
            bool(row.admin),
            Limits(row.rpm_limit, row.tpm_limit, row.max_active_jobs),
        )


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id, role and limits (never the key itself)."""

    key_id: str
    admin: bool
    limits: Limits


class KeyStore:
    """Creates, lists, revokes and checks API keys."""

    def __init__(self, engine: AsyncEngine, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        # hash → (caller or None, expiry). Bounds the database reads of a busy key;
        # a revocation or a change of limits takes effect within cache_seconds.
        self._cache: dict[str, tuple[Caller | None, float]] = {}
        # Entries being read again ahead of their expiry (hash → task).
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self.refresh_delay = min(0.05, cache_seconds / 10)

    async def create(
        self, name: str, key: str | None = None, admin: bool = False, limits: Limits = Limits()
    ) -> tuple[KeyRecord, str]:
        """A new key and its plain text, which is never stored."""
        key = key or new_key()
        record = KeyRecord(str(uuid.uuid4()), name, key[:10], utcnow(), None, admin, limits)
        async with self.engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=record.id,
                    name=name,
                    prefix=record.prefix,
                    key_hash=hash_key(key),
                    created_at=record.created_at,
                    admin=admin,
                    rpm_limit=limits.rpm,
                    tpm_limit=limits.tpm,
                    max_active_jobs=limits.max_active_jobs,
                )
            )
        return record, key

    async def ensure(self, key: str, name: str, admin: bool = False) -> KeyRecord:
        """Register `key` unless it is already known (the bootstrap key)."""
        query = api_keys.select().where(api_keys.c.key_hash == hash_key(key))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is not None:
            return KeyRecord.from_row(row)
        record, _ = await self.create(name, key, admin=admin)
        return record

    async def list(self) -> list[KeyRecord]:
        query = api_keys.select().order_by(api_keys.c.created_at)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [KeyRecord.from_row(r) for r in rows]

    def _match(self, id_or_prefix: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            sa.or_(api_keys.c.id == id_or_prefix, api_keys.c.prefix == id_or_prefix),
            api_keys.c.revoked_at.is_(None),
        )

    async def revoke(self, id_or_prefix: str) -> bool:
        """Revoke the key with this id or display prefix; False if none matched."""
        return await self._update(id_or_prefix, revoked_at=utcnow())

    async def set_limits(self, id_or_prefix: str, limits: Limits) -> bool:
        """Replace a key's limits; False if no active key matched."""
        return await self._update(
            id_or_prefix,
            rpm_limit=limits.rpm,
            tpm_limit=limits.tpm,
            max_active_jobs=limits.max_active_jobs,
        )

    async def _update(self, id_or_prefix: str, **values: Any) -> bool:
        statement = sa.update(api_keys).where(self._match(id_or_prefix)).values(**values)
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        self._cache.clear()
        return bool(result.rowcount)

    async def count(self) -> int:
        query = sa.select(sa.func.count()).select_from(api_keys)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def authenticate(self, key: str) -> Caller | None:
        """The caller behind `key`, or None if it is unknown or revoked.

        A key in use is read again in the background once half its cache time is gone,
        so its entry is renewed before it expires and no request of a busy key waits for
        the database (one in every 125 did, at 25 requests a second: the submits' p99).
        A cached answer is never served past its expiry.
        """
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached and cached[1] > now:
            if cached[1] - now < self.cache_seconds / 2 and digest not in self._refreshing:
                self._refresh_later(digest)
            return cached[0]
        return await self._read(digest)

    async def _read(self, digest: str) -> Caller | None:
        read_at = time.monotonic()
        query = api_keys.select().where(
            api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        caller = None
        if row is not None:
            record = KeyRecord.from_row(row)
            caller = Caller(record.id, record.admin, record.limits)
        if len(self._cache) > 10_000:
            self._cache.clear()
        # From when the read started: a revocation committed during it is seen in time.
        self._cache[digest] = (caller, read_at + self.cache_seconds)
        return caller

    def _refresh_later(self, digest: str) -> None:
        async def refresh() -> None:
            try:
                # A moment later: the request that noticed is still being served on this
                # loop, and the read would take CPU from it.
                await asyncio.sleep(self.refresh_delay)
                await self._read(digest)
            except Exception as exc:  # the entry expires as usual; a request reads it then
                log.warning("api key refresh failed: %s", exc)
            finally:
                self._refreshing.pop(digest, None)

        # A fresh context: the refresh must not log under this request's id.
        task = asyncio.get_running_loop().create_task(refresh(), context=contextvars.Context())
        self._refreshing[digest] = task

    async def close(self) -> None:
        """Stop the refreshes under way (they hold database connections)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
