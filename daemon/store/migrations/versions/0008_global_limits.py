"""Shared rate and domain limits on PostgreSQL: ``rate_buckets`` (a token bucket per provider
limit) and ``limit_slots`` (leased concurrency slots per receiving domain); see
``topslot.store.limits``. Created on SQLite too (one node keeps its limits in process; the tables
stay empty there).

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rate_buckets")),
    )
    op.create_table(
        "limit_slots",
        sa.Column("scope", sa.String(100), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", "slot", name=op.f("pk_limit_slots")),
    )
    op.create_index(op.f("ix_limit_slots_holder"), "limit_slots", ["holder"])


def downgrade() -> None:
    op.drop_index(op.f("ix_limit_slots_holder"), table_name="limit_slots")
    op.drop_table("limit_slots")
    op.drop_table("rate_buckets")
