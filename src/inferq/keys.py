"""API keys: made at random, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.db.tables import api_keys
from inferq.jobs.store import utcnow

KEY_PREFIX = "iq_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class KeyStore:
    """Creates, lists, revokes and checks API keys."""

    def __init__(self, engine: AsyncEngine, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        # hash → (key id or None, expiry). Bounds the database reads of a busy key;
        # a revocation takes effect within cache_seconds.
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def create(self, name: str, key: str | None = None) -> tuple[KeyRecord, str]:
        """A new key and its plain text, which is never stored."""
        key = key or new_key()
        record = KeyRecord(str(uuid.uuid4()), name, key[:10], utcnow(), None)
        async with self.engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=record.id,
                    name=name,
                    prefix=record.prefix,
                    key_hash=hash_key(key),
                    created_at=record.created_at,
                )
            )
        return record, key

    async def ensure(self, key: str, name: str) -> KeyRecord:
        """Register `key` unless it is already known (the bootstrap key)."""
        query = api_keys.select().where(api_keys.c.key_hash == hash_key(key))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is not None:
            return KeyRecord(row.id, row.name, row.prefix, row.created_at, row.revoked_at)
        record, _ = await self.create(name, key)
        return record

    async def list(self) -> list[KeyRecord]:
        query = api_keys.select().order_by(api_keys.c.created_at)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [KeyRecord(r.id, r.name, r.prefix, r.created_at, r.revoked_at) for r in rows]

    async def revoke(self, id_or_prefix: str) -> bool:
        """Revoke the key with this id or display prefix; False if none matched."""
        statement = (
            sa.update(api_keys)
            .where(
                sa.or_(api_keys.c.id == id_or_prefix, api_keys.c.prefix == id_or_prefix),
                api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        self._cache.clear()
        return bool(result.rowcount)

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(api_keys))).scalar_one()
            )

    async def authenticate(self, key: str) -> str | None:
        """The key's id, or None if it is unknown or revoked."""
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached and cached[1] > now:
            return cached[0]
        query = sa.select(api_keys.c.id).where(
            api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
        )
        async with self.engine.connect() as conn:
            key_id = (await conn.execute(query)).scalar_one_or_none()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (key_id, now + self.cache_seconds)
        return key_id
