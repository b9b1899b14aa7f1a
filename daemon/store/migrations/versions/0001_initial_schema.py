"""Initial schema: contacts and history, suppressions, campaigns, the delivery ledger, coupons,
links, events and conversions. Written out in full (not metadata.create_all) so later
migrations have a fixed base.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-24 14:54:10.553272
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _bigint_pk() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("gender", sa.String(length=20), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("age", sa.Integer(), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("im_ids", _json(), nullable=True),
        sa.Column("attributes", _json(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("external_id", name=op.f("uq_contacts_external_id")),
    )
    op.create_index(op.f("ix_contacts_email"), "contacts", ["email"], unique=False)
    op.create_index(op.f("ix_contacts_phone"), "contacts", ["phone"], unique=False)
    op.create_table(
        "conversions",
        sa.Column("id", _bigint_pk(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("refund", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("coupon_code", sa.String(length=64), nullable=True),
        sa.Column("click_id", sa.String(length=100), nullable=True),
        sa.Column("contact_ref", sa.String(length=200), nullable=True),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("campaign_id", sa.String(length=63), nullable=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.Column("channel", sa.String(length=10), nullable=True),
        sa.Column("slot", sa.String(length=5), nullable=True),
        sa.Column("attributed_by", sa.String(length=10), server_default=sa.text("'none'"), nullable=False),
        sa.Column("revenue", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("discount", sa.Numeric(precision=14, scale=2), server_default=sa.text("0"), nullable=False),
        sa.Column("units", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("margin", sa.Numeric(precision=5, scale=4), nullable=True),
        sa.Column("source", sa.String(length=10), server_default=sa.text("'webhook'"), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "attributed_by IN ('coupon', 'click', 'contact', 'none')", name=op.f("ck_conversions_attributed_by")
        ),
        sa.CheckConstraint("revenue >= 0 AND discount >= 0 AND units >= 0", name=op.f("ck_conversions_amounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversions")),
        sa.UniqueConstraint("order_id", "refund", name=op.f("uq_conversions_order_id_refund")),
    )
    op.create_index(
        op.f("ix_conversions_campaign_id_attributed_by"), "conversions", ["campaign_id", "attributed_by"], unique=False
    )
    op.create_index(
        op.f("ix_conversions_contact_id_occurred_at"), "conversions", ["contact_id", "occurred_at"], unique=False
    )
    op.create_index(op.f("ix_conversions_coupon_code"), "conversions", ["coupon_code"], unique=False)
    op.create_table(
        "links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=63), nullable=False),
        sa.Column("key", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links")),
        sa.UniqueConstraint("campaign_id", "key", name=op.f("uq_links_campaign_id_key")),
    )
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("channel IN ('email', 'sms', 'im')", name=op.f("ck_suppressions_channel")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("channel", "address", name=op.f("uq_suppressions_channel_address")),
    )
    op.create_table(
        "consents",
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("channel IN ('email', 'sms', 'im')", name=op.f("ck_consents_channel")),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_consents_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("contact_id", "channel", name=op.f("pk_consents")),
    )
    op.create_table(
        "contact_tags",
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_contact_tags_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("contact_id", "tag", name=op.f("pk_contact_tags")),
    )
    op.create_index(op.f("ix_contact_tags_tag"), "contact_tags", ["tag"], unique=False)
    op.create_table(
        "coupon_codes",
        sa.Column("id", _bigint_pk(), autoincrement=True, nullable=False),
        sa.Column("pool", sa.String(length=200), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=63), nullable=True),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=10), server_default=sa.text("'available'"), nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('available', 'reserved', 'assigned')", name=op.f("ck_coupon_codes_state")),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_coupon_codes_contact_id_contacts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_codes")),
        sa.UniqueConstraint("pool", "code", name=op.f("uq_coupon_codes_pool_code")),
    )
    op.create_index(op.f("ix_coupon_codes_code"), "coupon_codes", ["code"], unique=False)
    op.create_index(op.f("ix_coupon_codes_pool_state_id"), "coupon_codes", ["pool", "state", "id"], unique=False)
    op.create_index(
        "uq_coupon_codes_campaign_contact",
        "coupon_codes",
        ["campaign_id", "contact_id"],
        unique=True,
        sqlite_where=sa.text("contact_id IS NOT NULL"),
        postgresql_where=sa.text("contact_id IS NOT NULL"),
    )
    op.create_table(
        "coupon_pools",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("available", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_coupon_pools")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", _bigint_pk(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=63), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("slot_date", sa.Date(), nullable=False),
        sa.Column("slot", sa.String(length=5), nullable=False),
        sa.Column("due_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatch_start_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("tz_source", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=12), server_default=sa.text("'planned'"), nullable=False),
        sa.Column("skip_reason", sa.String(length=30), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_utc", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_epoch", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("lease_expires_utc", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_id", sa.String(length=200), nullable=True),
        sa.Column("coupon_code", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("plan_run", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("channel IN ('email', 'sms', 'im')", name=op.f("ck_deliveries_channel")),
        sa.CheckConstraint(
            "state IN ('planned', 'claimed', 'sending', 'sent', 'delivered', 'bounced', 'retry_wait', 'failed', 'unknown', 'skipped')",
            name=op.f("ck_deliveries_state"),
        ),
        sa.CheckConstraint(
            "tz_source IN ('contact', 'phone', 'country', 'fallback', 'campaign')", name=op.f("ck_deliveries_tz_source")
        ),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name=op.f("fk_deliveries_campaign_id_campaigns")),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_deliveries_contact_id_contacts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "campaign_id",
            "contact_id",
            "channel",
            "slot_date",
            "slot",
            name=op.f("uq_deliveries_campaign_id_contact_id_channel_slot_date_slot"),
        ),
    )
    op.create_index(
        op.f("ix_deliveries_campaign_id_channel_due_utc_state"),
        "deliveries",
        ["campaign_id", "channel", "due_utc", "state"],
        unique=False,
    )
    op.create_index(op.f("ix_deliveries_state"), "deliveries", ["state"], unique=False)
    op.create_table(
        "purchases",
        sa.Column("id", _bigint_pk(), autoincrement=True, nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=200), nullable=True),
        sa.Column("sku", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("purchased_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_purchases_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchases")),
        sa.UniqueConstraint("order_id", "sku", name=op.f("uq_purchases_order_id_sku")),
    )
    op.create_index(
        op.f("ix_purchases_contact_id_category_purchased_at"),
        "purchases",
        ["contact_id", "category", "purchased_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_purchases_contact_id_sku_purchased_at"),
        "purchases",
        ["contact_id", "sku", "purchased_at"],
        unique=False,
    )
    op.create_table(
        "searches",
        sa.Column("id", _bigint_pk(), autoincrement=True, nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("term", sa.String(length=500), nullable=False),
        sa.Column("term_folded", sa.String(length=500), nullable=False),
        sa.Column("searched_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_searches_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_searches")),
        sa.UniqueConstraint("contact_id", "term", "searched_at", name=op.f("uq_searches_contact_id_term_searched_at")),
    )
    op.create_index(op.f("ix_searches_contact_id_searched_at"), "searches", ["contact_id", "searched_at"], unique=False)
    op.create_table(
        "events",
        sa.Column("id", _bigint_pk(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.Column("campaign_id", sa.String(length=63), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column("referer", sa.String(length=500), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("label", sa.String(length=20), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], name=op.f("fk_events_delivery_id_deliveries")),
        sa.ForeignKeyConstraint(["link_id"], ["links.id"], name=op.f("fk_events_link_id_links")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_delivery_id_kind"), "events", ["delivery_id", "kind"], unique=False)
    op.create_index(
        op.f("ix_events_campaign_id_kind_occurred_at"), "events", ["campaign_id", "kind", "occurred_at"], unique=False
    )
    op.create_index(op.f("ix_events_occurred_at"), "events", ["occurred_at"], unique=False)


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("searches")
    op.drop_table("purchases")
    op.drop_table("deliveries")
    op.drop_table("coupon_pools")
    op.drop_table("coupon_codes")
    op.drop_table("contact_tags")
    op.drop_table("consents")
    op.drop_table("suppressions")
    op.drop_table("links")
    op.drop_table("conversions")
    op.drop_table("contacts")
    op.drop_table("campaigns")
