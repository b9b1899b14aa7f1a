"""Tracking batches are stored exactly once: ``tracking_sources`` keeps, per tracking server run,
the number of the last hit stored (``written_through``), moved in each batch's own transaction; a
batch written again because the writer process was killed between its commit and its answer skips
the hits already stored (before, that one batch was stored twice).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracking_sources",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("written_through", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_tracking_sources")),
    )


def downgrade() -> None:
    op.drop_table("tracking_sources")
