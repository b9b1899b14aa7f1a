"""The ledger records which provider took each message and how many SMS segments it cost, and
finds a row by the provider's id (status callbacks, bounces).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("provider", sa.String(20), nullable=True))
        batch.add_column(sa.Column("segments", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_deliveries_provider_id"), "deliveries", ["provider_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_deliveries_provider_id"), table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("segments")
        batch.drop_column("provider")
