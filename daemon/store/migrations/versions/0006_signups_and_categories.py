"""Signups beside orders, and product categories: ``conversions.kind`` (``order`` | ``signup``; a
signup is a registered user credited like an order), ``conversions.category`` (for the campaign's
``costs.category_margins``); an id is unique per kind and refund flag.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversions") as batch:
        batch.add_column(sa.Column("kind", sa.String(10), server_default=sa.text("'order'"), nullable=False))
        batch.add_column(sa.Column("category", sa.String(100), nullable=True))
        batch.drop_constraint(op.f("uq_conversions_order_id_refund"), type_="unique")
        batch.create_unique_constraint(op.f("uq_conversions_kind_order_id_refund"), ["kind", "order_id", "refund"])
        batch.create_check_constraint(op.f("ck_conversions_kind"), "kind IN ('order', 'signup')")


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM conversions WHERE kind <> 'order'"))
    with op.batch_alter_table("conversions") as batch:
        batch.drop_constraint(op.f("ck_conversions_kind"), type_="check")
        batch.drop_constraint(op.f("uq_conversions_kind_order_id_refund"), type_="unique")
        batch.create_unique_constraint(op.f("uq_conversions_order_id_refund"), ["order_id", "refund"])
        batch.drop_column("category")
        batch.drop_column("kind")
