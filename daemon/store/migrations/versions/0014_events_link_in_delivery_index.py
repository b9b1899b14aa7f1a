"""The link of a click in the index of one delivery's events by kind and time:
``ix_events_delivery_id_kind_occurred_at`` becomes ``ix_events_delivery_id_kind_occurred_at_link_id``,
so the tracking writer's burst check (which links each of a batch's deliveries had clicked in the last
``burst_window``: ``tracking_events.recent_click_links``) is answered from the index alone, without
reading each click's row for its link (measured with the writer alone: 38 → 34 µs of CPU a hit).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 01:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMNS = ["delivery_id", "kind", "occurred_at"]


def upgrade() -> None:
    op.create_index(
        op.f("ix_events_delivery_id_kind_occurred_at_link_id"), "events", [*COLUMNS, "link_id"], unique=False
    )
    op.drop_index(op.f("ix_events_delivery_id_kind_occurred_at"), table_name="events")


def downgrade() -> None:
    op.create_index(op.f("ix_events_delivery_id_kind_occurred_at"), "events", COLUMNS, unique=False)
    op.drop_index(op.f("ix_events_delivery_id_kind_occurred_at_link_id"), table_name="events")
