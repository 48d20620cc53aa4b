"""Usage and cost: each job's cost, and indexes for usage over time.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
    op.create_index("ix_jobs_key_finished", "jobs", ["key_id", "finished_at"])
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs")
    op.drop_index("ix_jobs_key_finished", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cost_usd")
