"""One campaign version across nodes: ``campaigns`` keeps the version in force (``config_hash``, now
the content hash of the campaign file and its templates; ``content_mtime``, their newest mtime;
``recorded_by``, the process that recorded it) and ``campaign_versions`` the version each daemon
process holds (``topslot status``); see ``topslot.campaign_version``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("content_mtime", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("recorded_by", sa.String(100), nullable=True))
    op.create_table(
        "campaign_versions",
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("campaign_id", sa.String(63), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("content_mtime", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", "campaign_id", name=op.f("pk_campaign_versions")),
    )


def downgrade() -> None:
    op.drop_table("campaign_versions")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("recorded_by")
        batch.drop_column("content_mtime")
