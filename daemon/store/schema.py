"""The database schema as SQLAlchemy Core tables, portable to SQLite and PostgreSQL.

Conventions:
- every timestamp is timezone-aware in Python; SQLite has no zone type, so ``UTCDateTime`` stores
  UTC there and hands back aware UTC datetimes on both engines;
- JSON columns are JSONB on PostgreSQL; an empty JSON value is stored as SQL NULL;
- text that segments match on is stored normalised (tags and categories case-folded, searches
  with a case-folded copy) so SQLite and PostgreSQL give identical answers;
- suppressions store each address as its channel writes it (``ChannelSpec.suppression_address``:
  email lower-cased).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import JSON, TypeDecorator

from topslot.channel import CHANNELS
from topslot.delivery import RECEIPTS, DeliveryState, SlotBasis

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

DELIVERY_STATES = tuple(DeliveryState)
TZ_SOURCES = ("contact", "phone", "country", "country_center", "fallback", "campaign")
SLOT_BASES = tuple(SlotBasis)
COUPON_STATES = ("available", "reserved", "assigned")
ATTRIBUTED_BY = ("coupon", "click", "contact", "none")
CONVERSION_KINDS = ("order", "signup")  # a purchase (or its refund); a registered user
RECEIPT_STATES = tuple(sorted(RECEIPTS))
CONTROL_ACTIONS = ("pause", "resume", "cancel")


_BIND_MEMO_SIZE = 4096


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: topslot stores aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Any) -> Any:
        """The usual conversion, memoised: batch writes repeat a few instants (now, slot times)
        thousands of times, and SQLite's datetime formatting is the hot spot of a ledger write."""
        convert = super().bind_processor(dialect)
        if convert is None:
            return None
        memo: dict[datetime, Any] = {}

        def process(value: datetime | None) -> Any:
            if value is None:
                return None
            try:
                return memo[value]
            except KeyError:
                result = convert(value)
                if len(memo) > _BIND_MEMO_SIZE:
                    memo.clear()
                memo[value] = result
                return result
            except TypeError:  # unhashable: let the conversion report it
                return convert(value)

        return process


def Json() -> JSON:  # noqa: N802 - reads like a type
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)  # constant DDL text from module constants
    return f"{column} IN ({quoted})"


def _now_col(name: str, nullable: bool = False) -> Column[datetime]:
    return Column(name, UTCDateTime(), nullable=nullable)


# ---------------------------------------------------------------- contacts and their history

contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("external_id", String(200), nullable=False),
    Column("email", String(320)),
    Column("phone", String(20)),  # E.164
    Column("first_name", String(200)),
    Column("last_name", String(200)),
    Column("gender", String(20)),
    Column("birth_date", Date),
    Column("age", Integer),  # used only when birth_date is unknown
    Column("country", String(2)),  # ISO 3166 alpha-2
    Column("timezone", String(64)),  # IANA
    Column("locale", String(35)),
    Column("im_ids", Json()),  # {"wechat": "...", "telegram": "..."}
    Column("attributes", Json()),
    _now_col("created_at"),
    _now_col("updated_at"),
    UniqueConstraint("external_id"),
    Index(None, "email"),
    Index(None, "phone"),
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),  # case-folded
    Index(None, "tag"),
)

consents = Table(
    "consents",
    metadata,
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("channel", String(10), primary_key=True),
    Column("granted", Boolean, nullable=False),
    Column("source", String(200)),
    _now_col("recorded_at"),
    CheckConstraint(_in("channel", CHANNELS), name="channel"),
)

purchases = Table(
    "purchases",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("order_id", String(200), nullable=False),
    Column("category", String(200)),  # case-folded
    Column("sku", String(200), nullable=False),
    Column("amount", Numeric(14, 2)),
    Column("currency", String(3)),
    _now_col("purchased_at"),
    UniqueConstraint("order_id", "sku"),
    Index(None, "contact_id", "category", "purchased_at"),
    Index(None, "contact_id", "sku", "purchased_at"),
)

searches = Table(
    "searches",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("term", String(500), nullable=False),
    Column("term_folded", String(500), nullable=False),  # term.casefold(): matched by segments
    _now_col("searched_at"),
    UniqueConstraint("contact_id", "term", "searched_at"),  # re-import is idempotent
    Index(None, "contact_id", "searched_at"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(10), nullable=False),
    Column("address", String(320), nullable=False),  # email lower-cased, phone E.164, im "provider:id"
    Column("reason", String(100), nullable=False),
    Column("source", String(200)),
    _now_col("created_at"),
    UniqueConstraint("channel", "address"),
    CheckConstraint(_in("channel", CHANNELS), name="channel"),
)

# ---------------------------------------------------------------- campaigns and the ledger

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("name", String(200), nullable=False),
    # The version in force (``topslot.campaign_version``): the content hash of the campaign file and
    # its templates, their newest mtime (None: a campaign given in code) and the process that recorded it.
    Column("config_hash", String(64), nullable=False),
    _now_col("content_mtime", nullable=True),
    Column("recorded_by", String(100)),
    _now_col("loaded_at"),
    Column("paused", Boolean, nullable=False, server_default=text("false")),  # ``topslot campaigns pause``
    _now_col("paused_at", nullable=True),
    _now_col("cancelled_at", nullable=True),  # ``topslot campaigns cancel``: never planned or sent again
    Column("control_reason", String(200)),  # the reason given with the last pause or cancel
)

# Every pause, resume and cancel, by whom and why (``topslot campaigns``; shown by ``topslot status``).
campaign_controls = Table(
    "campaign_controls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", String(63), ForeignKey("campaigns.id"), nullable=False),
    Column("action", String(10), nullable=False),  # pause | resume | cancel
    Column("reason", String(200)),
    Column("actor", String(100), nullable=False),  # user@host that ran the command
    Column("rows", Integer, nullable=False, server_default=text("0")),  # cancel: rows retired
    _now_col("at"),
    Index(None, "campaign_id", "at"),
    CheckConstraint(_in("action", CONTROL_ACTIONS), name="action"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("campaign_id", String(63), ForeignKey("campaigns.id"), nullable=False),
    Column("contact_id", Integer, ForeignKey("contacts.id"), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("slot_date", Date, nullable=False),  # recipient-local date
    Column("slot", String(5), nullable=False),  # HH:MM local
    _now_col("due_utc"),
    Column("timezone", String(64), nullable=False),
    Column("tz_source", String(16), nullable=False),
    Column("country", String(2)),  # the country whose calendar and quiet hours the row follows
    Column("slot_basis", String(12)),  # why this slot (SlotBasis); randomised ones are causal evidence
    Column("fallback_of", String(10)),  # sent only if this channel's row of the contact got no human engagement
    Column("state", String(12), nullable=False, server_default=text("'planned'")),
    Column("skip_reason", String(30)),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _now_col("next_attempt_utc", nullable=True),
    Column("lease_owner", String(100)),
    Column("lease_epoch", BigInteger, nullable=False, server_default=text("0")),
    _now_col("lease_expires_utc", nullable=True),
    Column("provider", String(20)),  # the messenger that took it (smtp, twilio, outbox, ...; Messenger.provider)
    Column("provider_id", String(200)),  # the provider's id for it (SMTP queue id, Twilio message SID)
    Column("segments", Integer),  # SMS: billed segments (GSM-7 160/153, UCS-2 70/67 characters)
    Column("coupon_code", String(64)),
    Column("last_error", Text),
    Column("plan_run", String(32)),  # the plan run that last wrote this row (stale rows are retired)
    _now_col("created_at"),
    _now_col("updated_at"),
    UniqueConstraint("campaign_id", "contact_id", "channel", "slot_date", "slot"),
    Index(None, "state"),  # retry_wait / recovery scans
    Index(None, "campaign_id", "channel", "due_utc", "state"),  # buckets: sizing, claiming, per-campaign counts
    Index(None, "provider_id"),  # a provider's receipt (status callback, bounce) finds its row
    Index(None, "contact_id", "channel", "due_utc"),  # frequency caps: a contact's recent messages on a channel
    CheckConstraint(_in("state", DELIVERY_STATES), name="state"),
    CheckConstraint(_in("channel", CHANNELS), name="channel"),
    CheckConstraint(_in("tz_source", TZ_SOURCES), name="tz_source"),
    CheckConstraint(_in("slot_basis", SLOT_BASES), name="slot_basis"),
)

# When each bucket (campaign × channel × due instant) starts being handed to its channel: sized from
# the bucket's row count and the channel's rate, ``arrive_within`` before the due instant at the
# earliest. Kept per bucket, not per delivery row, so that settling it after a plan touches a row per
# bucket, not one per recipient. A bucket with no row here starts at its due instant.
dispatch_starts = Table(
    "dispatch_starts",
    metadata,
    Column("campaign_id", String(63), ForeignKey("campaigns.id"), primary_key=True),
    Column("channel", String(10), primary_key=True),
    Column("due_utc", UTCDateTime(), primary_key=True),
    _now_col("start_utc"),
    CheckConstraint(_in("channel", CHANNELS), name="channel"),
)

# A provider's final receipt (Twilio status callback) that arrived before the dispatcher recorded
# the row's provider id: kept until that row is recorded (``topslot.store.receipts``), then applied
# and deleted; purged after ``receipts.PENDING_TTL``. First final receipt per provider id wins.
provider_receipts = Table(
    "provider_receipts",
    metadata,
    Column("provider_id", String(200), primary_key=True),  # deliveries.provider_id (Twilio message SID)
    Column("provider", String(20), nullable=False),  # twilio
    Column("state", String(12), nullable=False),  # delivered | bounced
    Column("error", String(200)),  # the bounce's last_error, e.g. "30005 unknown destination handset"
    Column("suppress", String(100)),  # suppression reason to add for the row's address, if any
    Column("source", String(200)),  # the suppression's source, e.g. "twilio_status:SM...:30005"
    _now_col("received_at"),
    Index(None, "received_at"),  # purge
    CheckConstraint(_in("state", RECEIPT_STATES), name="state"),
)

# ---------------------------------------------------------------- coupons, links, events, conversions

coupon_codes = Table(
    "coupon_codes",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("pool", String(200), nullable=False),
    Column("code", String(64), nullable=False),
    Column("campaign_id", String(63)),
    Column("contact_id", Integer, ForeignKey("contacts.id")),
    Column("state", String(10), nullable=False, server_default=text("'available'")),
    _now_col("reserved_at", nullable=True),
    _now_col("assigned_at", nullable=True),
    # generated codes live in pool "gen:<campaign>"; two campaigns may (rarely) generate the same text
    UniqueConstraint("pool", "code"),
    Index(None, "code"),  # redemptions join on the code
    Index(None, "pool", "state", "id"),  # "next available codes" is an index range scan
    # one code (reserved or assigned) per (campaign, contact)
    Index(
        "uq_coupon_codes_campaign_contact",
        "campaign_id",
        "contact_id",
        unique=True,
        sqlite_where=text("contact_id IS NOT NULL"),
        postgresql_where=text("contact_id IS NOT NULL"),
    ),
    CheckConstraint(_in("state", COUPON_STATES), name="state"),
)

# stock counters of imported pools, kept in the same transactions that change coupon_codes
coupon_pools = Table(
    "coupon_pools",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("total", Integer, nullable=False, server_default=text("0")),
    Column("available", Integer, nullable=False, server_default=text("0")),
    _now_col("created_at"),
    _now_col("updated_at"),
)

links = Table(  # destinations of tracked links; the token names (delivery, key), never the URL
    "links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", String(63), nullable=False),
    Column("key", String(16), nullable=False),  # topslot.links.urls.link_key(url): hex of SHA-256
    Column("url", Text, nullable=False),  # normalised (topslot.links.urls.normalise_url)
    UniqueConstraint("campaign_id", "key"),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("delivery_id", BigInteger, ForeignKey("deliveries.id")),
    Column("campaign_id", String(63)),  # copied from the delivery: reports filter on it without a join
    Column("kind", String(20), nullable=False),  # open | click | unsubscribe | bounce | ...
    Column("link_id", Integer, ForeignKey("links.id")),
    _now_col("occurred_at"),
    Column("method", String(8)),  # HTTP method of a tracking request (HEAD clicks are scanners)
    Column("user_agent", String(500)),  # outside input: truncated, control characters replaced
    Column("referer", String(500)),
    Column("ip", String(45)),
    Column("label", String(20)),  # human | machine_open | scanner (topslot.tracking.classify)
    Column("reason", String(200)),
    # burst detection reads a delivery's clicks of the last seconds (the links clicked: from the
    # index alone), open upgrades its opens
    Index(None, "delivery_id", "kind", "occurred_at", "link_id"),
    Index(None, "campaign_id", "kind", "occurred_at"),
    Index(None, "occurred_at"),
)

# How far each tracking server's hits are stored (``topslot.tracking.ingest``): the server numbers
# its hits (``Hit.seq``, in the order its buffer writes them) and each batch moves ``written_through``
# to its last number in the batch's own transaction, so a batch written again after its answer was
# lost (the writer process killed between its commit and its answer) skips what is already stored.
# A row per server run; purged a week after its last write (``tracking_events.purge_sources``).
tracking_sources = Table(
    "tracking_sources",
    metadata,
    Column("source", String(32), primary_key=True),  # the server run's random id (hex)
    Column("written_through", BigInteger, nullable=False),  # every hit numbered up to this one is stored
    _now_col("updated_at"),
)

conversions = Table(  # orders and signups from the shop's webhook or a CSV import, with their attribution
    "conversions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(10), nullable=False, server_default=text("'order'")),  # order | signup
    Column("order_id", String(200), nullable=False),  # a signup: the shop's user id
    Column("refund", Boolean, nullable=False, server_default=text("false")),
    Column("coupon_code", String(64)),  # the matched code's stored form, else the typed one
    Column("click_id", String(100)),  # the ``tsid`` click token as received
    Column("contact_ref", String(200)),  # the shop's contact id (contacts.external_id) as received
    Column("contact_id", Integer),  # resolved contacts.id (from the coupon, the click or contact_ref)
    Column("campaign_id", String(63)),
    Column("delivery_id", BigInteger),
    Column("channel", String(10)),
    Column("slot", String(5)),
    Column("attributed_by", String(10), nullable=False, server_default=text("'none'")),
    Column("revenue", Numeric(14, 2), nullable=False),  # paid by the shopper, after the discount
    Column("discount", Numeric(14, 2), nullable=False, server_default=text("0")),
    Column("units", Integer, nullable=False, server_default=text("0")),
    Column("currency", String(3)),
    Column("margin", Numeric(5, 4)),  # gross margin 0..1 of this order, when the shop knows it
    Column("category", String(100)),  # product category (``costs.category_margins``)
    Column("source", String(10), nullable=False, server_default=text("'webhook'")),
    _now_col("occurred_at"),
    _now_col("received_at"),
    UniqueConstraint("kind", "order_id", "refund"),  # a re-sent webhook is ignored; a refund is its own row
    Index(None, "campaign_id", "attributed_by"),
    Index(None, "contact_id", "occurred_at"),
    Index(None, "coupon_code"),
    CheckConstraint(_in("attributed_by", ATTRIBUTED_BY), name="attributed_by"),
    CheckConstraint("revenue >= 0 AND discount >= 0 AND units >= 0", name="amounts"),
    CheckConstraint(_in("kind", CONVERSION_KINDS), name="kind"),
)

# ---------------------------------------------------------------- processes and buckets (``topslot status``)

# Every daemon process and dispatch helper, by lease owner (``node/boot``, ``node#wK/boot``): its
# heartbeat is refreshed every few seconds while it runs, so ``topslot status`` on any node sees it.
processes = Table(
    "processes",
    metadata,
    Column("owner", String(100), primary_key=True),
    Column("node", String(100), nullable=False),
    Column("role", String(10), nullable=False),  # daemon | helper
    Column("pid", Integer, nullable=False),
    Column("version", String(40), nullable=False),
    _now_col("started_at"),
    _now_col("last_heartbeat_utc"),
    _now_col("stopped_at", nullable=True),  # a graceful stop; None while running (or after a crash)
    _now_col("dead_at", nullable=True),  # found dead by another node, its rows taken back (fenced for good)
    Index(None, "last_heartbeat_utc"),
)

# The version of each campaign each daemon process holds (``processes.owner``), so ``topslot status``
# shows who holds another version than the one in force (``campaigns.config_hash``).
campaign_versions = Table(
    "campaign_versions",
    metadata,
    Column("owner", String(100), primary_key=True),
    Column("campaign_id", String(63), primary_key=True),
    Column("content_hash", String(64), nullable=False),
    _now_col("content_mtime", nullable=True),
    _now_col("seen_at"),
)

# What each bucket's send came to (the scheduler's ``bucket_finished``), kept for ``topslot status``.
bucket_runs = Table(
    "bucket_runs",
    metadata,
    Column("campaign_id", String(63), primary_key=True),
    Column("channel", String(10), primary_key=True),
    Column("due_utc", UTCDateTime(), primary_key=True),
    Column("owner", String(100), nullable=False),
    Column("claimed", Integer, nullable=False),
    Column("accepted", Integer),  # None: no tally (nothing sent by this process's dispatcher)
    Column("late", Integer),
    Column("max_late_ms", Integer),  # the latest acceptance after the slot, in milliseconds
    _now_col("started_at"),
    _now_col("finished_at"),
    Index(None, "finished_at"),
)

# Shared rate limits (topslot.store.limits; PostgreSQL only, unused on SQLite): one token bucket per
# provider limit. ``tokens`` may be negative (tokens reserved ahead); ``refilled_at`` is the database
# server's clock in epoch seconds, so the nodes' clocks never matter.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("name", String(100), primary_key=True),  # smtp:<server>, twilio, im:<name>
    Column("tokens", Float, nullable=False),
    Column("refilled_at", Float, nullable=False),
)

# Shared concurrency limits: slot ``slot`` of ``key`` (a receiving domain) under ``scope`` (a
# server's limit) is held by ``holder`` (a process) until ``expires_at`` (the database's clock, epoch
# seconds), renewed while held; a row whose lease ran out is a free slot.
limit_slots = Table(
    "limit_slots",
    metadata,
    Column("scope", String(100), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("expires_at", Float, nullable=False),
    Index(None, "holder"),
)
