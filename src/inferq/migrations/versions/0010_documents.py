"""Documents for retrieval (RAG), by key and collection, with their vectors.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from inferq.db.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_documents_key_collection", "documents", ["key_id", "collection"])
    op.create_index("ix_documents_job", "documents", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_documents_job", "documents")
    op.drop_index("ix_documents_key_collection", "documents")
    op.drop_table("documents")
