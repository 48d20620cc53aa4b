"""When a job's request and answer were deleted by the result expiry.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from inferq.db.tables import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("expired_at", UTCDateTime(), nullable=True))
    op.create_index("ix_jobs_unexpired", "jobs", ["expired_at", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_unexpired", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("expired_at")
