"""Per-key signing secrets for the API (async): made on first use, rotated on request."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.db.tables import webhook_secrets
from inferq.jobs.store import utcnow
from inferq.webhooks.signing import new_secret


class SecretStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get_or_create(self, key_id: str) -> str:
        """The key's secret, made now if it has none yet."""
        existing = await self._get(key_id)
        if existing is not None:
            return existing
        try:
            async with self.engine.begin() as conn:
                secret = new_secret()
                await conn.execute(
                    webhook_secrets.insert().values(
                        key_id=key_id, secret=secret, created_at=utcnow()
                    )
                )
                return secret
        except sa.exc.IntegrityError:
            # Another request made it first: theirs is the key's secret.
            raced = await self._get(key_id)
            assert raced is not None
            return raced

    async def rotate(self, key_id: str) -> str:
        """A new secret; the old one keeps signing alongside it for the grace period."""
        await self.get_or_create(key_id)
        secret = new_secret()
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(webhook_secrets)
                .where(webhook_secrets.c.key_id == key_id)
                .values(
                    previous_secret=webhook_secrets.c.secret, secret=secret, rotated_at=utcnow()
                )
            )
        return secret

    async def _get(self, key_id: str) -> str | None:
        query = sa.select(webhook_secrets.c.secret).where(webhook_secrets.c.key_id == key_id)
        async with self.engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return str(value) if value is not None else None
