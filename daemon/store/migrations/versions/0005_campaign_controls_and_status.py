"""Campaign controls and status: a campaign can be paused (when, why) or cancelled, every control is
recorded in ``campaign_controls``; every daemon process keeps a heartbeat in ``processes``; what each
bucket's send came to is kept in ``bucket_runs`` (``topslot status``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("control_reason", sa.String(200), nullable=True))
    op.create_table(
        "campaign_controls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(63), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("rows", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("action IN ('pause', 'resume', 'cancel')", name=op.f("ck_campaign_controls_action")),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_controls_campaign_id_campaigns")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_controls")),
    )
    op.create_index(op.f("ix_campaign_controls_campaign_id_at"), "campaign_controls", ["campaign_id", "at"])
    op.create_table(
        "processes",
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("node", sa.String(100), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_processes")),
    )
    op.create_index(op.f("ix_processes_last_heartbeat_utc"), "processes", ["last_heartbeat_utc"])
    op.create_table(
        "bucket_runs",
        sa.Column("campaign_id", sa.String(63), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("due_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=True),
        sa.Column("late", sa.Integer(), nullable=True),
        sa.Column("max_late_ms", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "channel", "due_utc", name=op.f("pk_bucket_runs")),
    )
    op.create_index(op.f("ix_bucket_runs_finished_at"), "bucket_runs", ["finished_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_bucket_runs_finished_at"), table_name="bucket_runs")
    op.drop_table("bucket_runs")
    op.drop_index(op.f("ix_processes_last_heartbeat_utc"), table_name="processes")
    op.drop_table("processes")
    op.drop_index(op.f("ix_campaign_controls_campaign_id_at"), table_name="campaign_controls")
    op.drop_table("campaign_controls")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("control_reason")
        batch.drop_column("cancelled_at")
        batch.drop_column("paused_at")
