"""The events of one delivery by kind *and time*: ``ix_events_delivery_id_kind`` becomes
``ix_events_delivery_id_kind_occurred_at``, so the tracking writer's burst detection (a batch's
deliveries' clicks of the last ``burst_window``) reads those seconds only, not every click the delivery
ever had: with the old index each batch read a hammered delivery's whole history (quadratic under a
flood of hits on a few tokens).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_events_delivery_id_kind_occurred_at"), "events", ["delivery_id", "kind", "occurred_at"], unique=False
    )
    op.drop_index(op.f("ix_events_delivery_id_kind"), table_name="events")


def downgrade() -> None:
    op.create_index(op.f("ix_events_delivery_id_kind"), "events", ["delivery_id", "kind"], unique=False)
    op.drop_index(op.f("ix_events_delivery_id_kind_occurred_at"), table_name="events")
