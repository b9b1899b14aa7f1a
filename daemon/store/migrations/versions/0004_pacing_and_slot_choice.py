"""Quiet hours, frequency caps, channel fallback and slot choice: each ledger row records the country
it follows, why it has its slot (``slot_basis``), the channel it falls back from, and a zone guessed
as a country's representative zone (``tz_source`` ``country_center``); a contact's recent messages
on a channel are found by index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OLD_SOURCES = "tz_source IN ('contact', 'phone', 'country', 'fallback', 'campaign')"
_NEW_SOURCES = "tz_source IN ('contact', 'phone', 'country', 'country_center', 'fallback', 'campaign')"
_BASES = "slot_basis IN ('first', 'split', 'exploration', 'history', 'default')"


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(op.f("ck_deliveries_tz_source"), type_="check")
        batch.alter_column("tz_source", type_=sa.String(16), existing_type=sa.String(10), existing_nullable=False)
        batch.create_check_constraint(op.f("ck_deliveries_tz_source"), _NEW_SOURCES)
        batch.add_column(sa.Column("country", sa.String(2), nullable=True))
        batch.add_column(sa.Column("slot_basis", sa.String(12), nullable=True))
        batch.add_column(sa.Column("fallback_of", sa.String(10), nullable=True))
        batch.create_check_constraint(op.f("ck_deliveries_slot_basis"), _BASES)
    op.create_index(
        op.f("ix_deliveries_contact_id_channel_due_utc"), "deliveries", ["contact_id", "channel", "due_utc"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_deliveries_contact_id_channel_due_utc"), table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(op.f("ck_deliveries_slot_basis"), type_="check")
        batch.drop_column("fallback_of")
        batch.drop_column("slot_basis")
        batch.drop_column("country")
        batch.drop_constraint(op.f("ck_deliveries_tz_source"), type_="check")
        batch.alter_column("tz_source", type_=sa.String(10), existing_type=sa.String(16), existing_nullable=False)
        batch.create_check_constraint(op.f("ck_deliveries_tz_source"), _OLD_SOURCES)
