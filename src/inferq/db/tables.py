"""The relational schema: API keys and jobs (SQLAlchemy Core tables)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    # SHA-256 of the key: keys are 256-bit random, so a slow hash adds nothing.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id"), nullable=False),
    # generate (chat or completion) | embed: picks the worker's handler.
    sa.Column("kind", sa.String(16), nullable=False, server_default="generate"),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("priority", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("request", sa.JSON(), nullable=False),
    sa.Column("metadata", sa.JSON(), nullable=False),
    sa.Column("output_text", sa.Text(), nullable=True),
    sa.Column("finish_reason", sa.String(32), nullable=True),
    sa.Column("prompt_tokens", sa.Integer(), nullable=True),
    sa.Column("completion_tokens", sa.Integer(), nullable=True),
    sa.Column("error_type", sa.String(64), nullable=True),
    sa.Column("error_message", sa.Text(), nullable=True),
    # Kind-specific result beyond text (e.g. embedding vectors).
    sa.Column("result", sa.JSON(), nullable=True),
    sa.Column("batch_id", sa.String(64), nullable=True),
    sa.Column("custom_id", sa.String(512), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Index("ix_jobs_key_created", "key_id", "created_at", "id"),
    sa.Index("ix_jobs_status", "status"),
    sa.Index("ix_jobs_batch", "batch_id", "status"),
)
