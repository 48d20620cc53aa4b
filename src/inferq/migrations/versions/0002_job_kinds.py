"""Job kinds, kind-specific results, and batch membership.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="generate")
        )
        batch.add_column(sa.Column("result", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("batch_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("custom_id", sa.String(512), nullable=True))
    op.create_index("ix_jobs_batch", "jobs", ["batch_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_batch", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("custom_id", "batch_id", "result", "kind"):
            batch.drop_column(column)
