"""Provider receipts that arrive before their ledger row is recorded (a Twilio status callback can
beat the dispatcher's commit of the row's message SID) wait in ``provider_receipts``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_receipts",
        sa.Column("provider_id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("suppress", sa.String(length=100), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('bounced', 'delivered')", name=op.f("ck_provider_receipts_state")),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_provider_receipts")),
    )
    op.create_index(op.f("ix_provider_receipts_received_at"), "provider_receipts", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_provider_receipts_received_at"), table_name="provider_receipts")
    op.drop_table("provider_receipts")
