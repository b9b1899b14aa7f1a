"""Tracking events in the store: what a batch of opens and clicks needs to know about its deliveries,
writing the labelled rows, relabelling, the one-click unsubscribe transaction, and the suppression
helpers every opt-out shares (one-click unsubscribe, SMS and WhatsApp STOP / START, provider receipts).

Batch functions take an open blocking ``Connection`` (the caller's transaction: one per batch; async
code calls them through ``AsyncConnection.run_sync``, the tracking writer's thread directly);
``delivery_campaign``, ``unsubscribe``, ``opt_out_address``, ``opt_out_im``, ``lift_suppression``,
``suppress_sent_address`` and ``event_counts`` take the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    Select,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.channel import spec_of
from topslot.delivery import MAYBE_HANDED_OVER, SuppressionReason
from topslot.delivery import DeliveryState as S
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import among, execute_rows, rows_at_once, unnest_rows, upsert_insert
from topslot.store.schema import (
    consents,
    contacts,
    deliveries,
    events,
    suppressions,
    tracking_sources,
)
from topslot.store.segments import keyed_id

# A delivery in one of these states has been handed to a provider; its ``updated_at`` says when
# (``sending``: the hand-over is under way; ``delivered``/``bounced``: the provider's callback time).
HANDOVER_STARTED = MAYBE_HANDED_OVER | {S.SENDING}
IDS_PER_QUERY = 1000


class DeliveryFacts(NamedTuple):  # a tuple: thousands are made per batch
    campaign_id: str
    channel: str
    handed_over_at: datetime | None  # None: not handed over (yet)


class StoredEvent(NamedTuple):  # a tuple: thousands are made per batch
    id: int
    delivery_id: int
    link_id: int | None
    occurred_at: datetime
    label: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    campaign_id: str
    channel: str
    contact_id: int
    first: bool  # False: this delivery had already unsubscribed (nothing new recorded)
    suppressed: int  # suppression rows added now


@dataclass(frozen=True, slots=True)
class OptedOut:
    suppressed: int  # suppression rows added now (0: the address was already suppressed)
    contacts: int  # contacts that have this address on the channel
    consents_withdrawn: int  # of those, consents that changed to withdrawn now


@dataclass(frozen=True, slots=True)
class Lifted:
    lifted: int  # suppression rows removed
    kept_reason: str | None  # the address stays suppressed for this other reason (hard bounce, ...)


# ---------------------------------------------------------------- request path


async def delivery_campaign(db: AsyncEngine | AsyncConnection, delivery_id: int) -> str | None:
    """The campaign of a delivery (the click redirect's link lookup needs it), or None."""
    stmt = select(deliveries.c.campaign_id).where(deliveries.c.id == delivery_id)
    if isinstance(db, AsyncConnection):
        return await db.scalar(stmt)
    async with db.connect() as conn:
        return await conn.scalar(stmt)


async def campaigns_of_range(db: AsyncEngine, first_id: int, last_id: int) -> dict[int, str]:
    """Delivery id → campaign id for the deliveries with ids in ``first_id..last_id``."""
    stmt = select(deliveries.c.id, deliveries.c.campaign_id).where(deliveries.c.id.between(first_id, last_id))
    async with db.connect() as conn:
        return {row.id: row.campaign_id for row in await conn.execute(stmt)}


# ---------------------------------------------------------------- batches


def delivery_facts(conn: Connection, delivery_ids: Iterable[int]) -> dict[int, DeliveryFacts]:
    """Campaign, channel and hand-over time of each delivery that exists."""
    stmt = _query(conn, "facts")
    out: dict[int, DeliveryFacts] = {}
    for chunk in _chunks(sorted(set(delivery_ids))):
        for delivery_id, campaign_id, channel, state, updated_at in rows_at_once(conn, stmt, {"ids": chunk}):
            out[delivery_id] = DeliveryFacts(campaign_id, channel, updated_at if state in HANDOVER_STARTED else None)
    return out


def recent_clicks(conn: Connection, delivery_ids: Iterable[int], since: datetime) -> list[StoredEvent]:
    """Stored clicks of these deliveries at or after ``since`` (burst detection across batches): read
    by ``ix_events_delivery_id_kind_occurred_at_link_id``, so the seconds asked for, not each delivery's history."""
    return _events_of(conn, _query(conn, "events", "click", True, None), delivery_ids, since)


def recent_click_links(conn: Connection, delivery_ids: Iterable[int], since: datetime) -> dict[int, set[int | None]]:
    """The links (ids; None for a click without one) of the stored clicks of these deliveries at or
    after ``since``: a row per delivery and link, no times. Which deliveries may be in a burst at all
    (burst detection then reads only their clicks, ``recent_clicks``). Answered from that index alone."""
    stmt = _query(conn, "click_links")
    out: dict[int, set[int | None]] = {}
    for chunk in _chunks(sorted(set(delivery_ids))):
        for delivery_id, link_id in rows_at_once(conn, stmt, {"ids": chunk, "since": since}):
            out.setdefault(delivery_id, set()).add(link_id)
    return out


def opens_of(conn: Connection, delivery_ids: Iterable[int], label: str | None = None) -> list[StoredEvent]:
    """Stored opens of these deliveries (with that label, if given): open upgrades."""
    return _events_of(conn, _query(conn, "events", "open", False, label), delivery_ids, None)


def with_open_labelled(conn: Connection, delivery_ids: Iterable[int], label: str) -> set[int]:
    """Which of these deliveries have an open labelled ``label``. Asked per delivery (``EXISTS``): the
    search stops at its first such open instead of reading all its opens (which a flood of hits on one
    token would make the cost of every batch)."""
    stmt = _query(conn, "with_open", label)
    found: set[int] = set()
    for chunk in _chunks(sorted(set(delivery_ids))):
        found.update(delivery_id for (delivery_id,) in rows_at_once(conn, stmt, {"ids": chunk}))
    return found


def _events_of(
    conn: Connection, stmt: Select[Any], delivery_ids: Iterable[int], since: datetime | None
) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    for chunk in _chunks(sorted(set(delivery_ids))):
        rows = rows_at_once(conn, stmt, {"ids": chunk, "since": since} if since is not None else {"ids": chunk})
        out.extend(StoredEvent._make(r) for r in rows)  # the columns selected, in order
    return out


@cache
def _query_of(dialect: str, name: str, *args: Any) -> Select[Any]:
    """The batch queries, built once per dialect (and kind / label); the ids are the parameter ``ids``."""
    if name == "facts":
        d = deliveries.c
        return select(d.id, d.campaign_id, d.channel, d.state, d.updated_at).where(among(dialect, d.id))
    e = events.c
    since = bindparam("since", type_=e.occurred_at.type)
    if name == "events":
        kind, recent, label = args
        stmt = select(e.id, e.delivery_id, e.link_id, e.occurred_at, e.label).where(
            among(dialect, e.delivery_id), e.kind == _fixed(kind)
        )
        if recent:
            stmt = stmt.where(e.occurred_at >= since)
        return stmt.where(e.label == _fixed(label)) if label is not None else stmt
    if name == "click_links":
        return (
            select(e.delivery_id, e.link_id)
            .where(among(dialect, e.delivery_id), e.kind == _fixed("click"), e.occurred_at >= since)
            .distinct()
        )
    if name == "with_open":
        (label,) = args
        has_open = (
            exists()
            .where(e.delivery_id == deliveries.c.id, e.kind == _fixed("open"), e.label == _fixed(label))
            .correlate(deliveries)
        )
        return select(deliveries.c.id).where(among(dialect, deliveries.c.id), has_open)
    raise ValueError(name)


def _query(conn: Connection, name: str, *args: Any) -> Select[Any]:
    return _query_of(conn.dialect.name, name, *args)


EVENT_FIELDS = (
    "delivery_id",
    "campaign_id",
    "kind",
    "link_id",
    "occurred_at",
    "method",
    "user_agent",
    "referer",
    "ip",
    "label",
    "reason",
)


async def insert_events(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert event rows (keys: ``EVENT_FIELDS``) in one statement."""
    if rows:
        await conn.execute(insert(events), [{k: row.get(k) for k in EVENT_FIELDS} for row in rows])


EventRow = tuple[Any, ...]  # the values of EVENT_FIELDS, in that order


def insert_event_rows(conn: Connection, rows: Sequence[EventRow]) -> None:
    """Insert event rows given as tuples (``EVENT_FIELDS`` order): the hot path of a batch, without
    SQLAlchemy's per-row work (parameter dicts, per-row compilation of parameters). Values are
    converted by the columns' own types (aware datetimes as ``UTCDateTime`` stores them), so rows read
    back as ``insert_events``'.

    PostgreSQL: one ``INSERT … SELECT FROM unnest(…)`` over one array per column (one statement,
    where an ``executemany`` runs the insert once per row on the server). SQLite: multi-row
    ``INSERT … VALUES (…), (…)`` (``topslot.store.dialect.execute_rows``)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        columns = {name: [row[i] for row in rows] for i, name in enumerate(EVENT_FIELDS)}
        conn.execute(_UNNEST_INSERT, columns)
        return
    sql, convert = _insert_plan(conn.dialect)
    execute_rows(conn, sql, [convert(row) for row in rows])


_UNNEST_INSERT = insert(events).from_select(EVENT_FIELDS, unnest_rows(events, EVENT_FIELDS))
_INSERT_PLANS: dict[tuple[str, str], tuple[str, Callable[[EventRow], tuple[Any, ...]]]] = {}


def _insert_plan(dialect: Dialect) -> tuple[str, Callable[[EventRow], tuple[Any, ...]]]:
    """(SQL in the driver's paramstyle, row tuple → driver parameters), made once per dialect."""
    key = (dialect.name, dialect.driver)
    plan = _INSERT_PLANS.get(key)
    if plan is not None:
        return plan
    compiled = insert(events).compile(dialect=dialect, column_keys=list(EVENT_FIELDS))
    order = list(compiled.positiontup or ())
    if sorted(order) != sorted(EVENT_FIELDS):
        raise RuntimeError(f"{dialect.name}: a positional paramstyle was expected for the events insert")
    steps = [(EVENT_FIELDS.index(name), _bind_processor(name, dialect)) for name in order]

    def convert(row: EventRow) -> tuple[Any, ...]:
        return tuple(row[i] if proc is None or row[i] is None else proc(row[i]) for i, proc in steps)

    plan = (str(compiled), convert)
    _INSERT_PLANS[key] = plan
    return plan


_SQLITE_DATETIME = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


def _bind_processor(name: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column's own bind processor; for ``occurred_at`` on SQLite (a new instant every row, so
    ``UTCDateTime``'s memo never hits) the same text made by ``isoformat`` in C, ~5× faster."""
    column_type = events.c[name].type
    if name == "occurred_at" and dialect.name == "sqlite":
        impl = column_type.impl.dialect_impl(dialect)  # type: ignore[attr-defined]
        if getattr(impl, "_storage_format", None) == _SQLITE_DATETIME:
            return _sqlite_instant
    return column_type._cached_bind_processor(dialect)


def _sqlite_instant(value: datetime) -> str:
    """``UTCDateTime`` + SQLite ``DATETIME`` binding: aware → UTC → ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if value.tzinfo is UTC:  # the server's clock: already UTC, cut the "+00:00"
        return value.isoformat(" ", "microseconds")[:26]
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: topslot stores aware datetimes only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def written_through(conn: Connection, source: str) -> int:
    """The number of the last hit of ``source`` (a tracking server run) stored; 0 if none is."""
    found = conn.execute(_SOURCE_READ, {"source": source}).scalar()
    return int(found or 0)


def set_written_through(conn: Connection, source: str, seq: int, now: datetime) -> None:
    """Every hit of ``source`` numbered up to ``seq`` is stored (in the transaction that stored them)."""
    conn.execute(_source_upsert(conn), {"source": source, "written_through": seq, "updated_at": now})


_SOURCE_READ = select(tracking_sources.c.written_through).where(tracking_sources.c.source == bindparam("source"))
_SOURCE_UPSERTS: dict[str, Any] = {}


def _source_upsert(conn: Connection) -> Any:
    """``set_written_through``'s statement, built once per dialect (building it took longer than running it)."""
    stmt = _SOURCE_UPSERTS.get(conn.dialect.name)
    if stmt is None:
        new = upsert_insert(conn, tracking_sources)
        stmt = _SOURCE_UPSERTS[conn.dialect.name] = new.on_conflict_do_update(
            index_elements=[tracking_sources.c.source],
            set_={"written_through": new.excluded.written_through, "updated_at": new.excluded.updated_at},
        )
    return stmt


def purge_sources(conn: Connection, before: datetime) -> int:
    """Forget the server runs whose last batch was stored before ``before`` (their hits can no
    longer come back: a batch is retried within minutes, by the run that numbered it)."""
    result = conn.execute(delete(tracking_sources).where(tracking_sources.c.updated_at < before))
    return int(result.rowcount or 0)


def set_labels(conn: Connection, changes: Sequence[tuple[int, str, str]]) -> None:
    """(event id, label, reason) triples."""
    if not changes:
        return
    stmt = (
        update(events)
        .where(events.c.id == bindparam("e_id"))
        .values(label=bindparam("e_label"), reason=bindparam("e_reason"))
    )
    conn.execute(stmt, [{"e_id": i, "e_label": lab, "e_reason": why} for i, lab, why in changes])


# ---------------------------------------------------------------- one-click unsubscribe


async def unsubscribe(
    engine: AsyncEngine,
    delivery_id: int,
    now: datetime,
    *,
    method: str = "POST",
    user_agent: str | None = None,
    referer: str | None = None,
    ip: str | None = None,
) -> Unsubscribed | None:
    """Suppress the delivery's channel address of its contact and withdraw that channel's consent,
    committed before returning (the very next claim skips the contact). Idempotent: a repeat adds
    nothing and records no second ``unsubscribe`` event. None when the delivery does not exist."""
    query = (
        select(
            deliveries.c.campaign_id,
            deliveries.c.channel,
            deliveries.c.contact_id,
            contacts.c.email,
            contacts.c.phone,
            contacts.c.im_ids,
        )
        .join(contacts, contacts.c.id == deliveries.c.contact_id)
        .where(deliveries.c.id == delivery_id)
    )
    source = f"delivery:{delivery_id}"
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        row = (await conn.execute(query)).first()
        if row is None:
            return None
        channel = row.channel
        addresses = spec_of(channel).all_addresses(row._mapping)
        added = await suppress_addresses(conn, channel, addresses, SuppressionReason.UNSUBSCRIBE, source, now)
        await withdraw_consents(conn, [row.contact_id], channel, SuppressionReason.UNSUBSCRIBE, now)
        seen = await conn.scalar(
            select(exists().where(events.c.delivery_id == delivery_id, events.c.kind == "unsubscribe"))
        )
        if not seen:
            await insert_events(
                conn,
                [
                    {
                        "delivery_id": delivery_id,
                        "campaign_id": row.campaign_id,
                        "kind": "unsubscribe",
                        "occurred_at": now,
                        "method": method,
                        "user_agent": user_agent,
                        "referer": referer,
                        "ip": ip,
                    }
                ],
            )
    return Unsubscribed(row.campaign_id, channel, row.contact_id, first=not seen, suppressed=added)


# ---------------------------------------------------------------- suppressions and consent (every opt-out)


async def suppress_addresses(
    conn: AsyncConnection, channel: str, addresses: Iterable[str], reason: str, source: str | None, now: datetime
) -> int:
    """Put these addresses (written as ``ChannelSpec.suppression_address`` writes them) on the
    channel's suppression list; an address already there keeps its first reason. Returns rows added."""
    spec = spec_of(channel)
    wanted = sorted({spec.suppression_address(a) for a in addresses if a and a.strip()})
    if not wanted:
        return 0
    rows = [
        {"channel": channel, "address": a, "reason": reason, "source": (source or "")[:200] or None, "created_at": now}
        for a in wanted
    ]
    stmt = (
        upsert_insert(conn, suppressions)
        .values(rows)
        .on_conflict_do_nothing(index_elements=[suppressions.c.channel, suppressions.c.address])
        .returning(suppressions.c.id)
    )
    return len((await conn.execute(stmt)).all())


async def withdraw_consents(
    conn: AsyncConnection, contact_ids: Iterable[int], channel: str, source: str, now: datetime
) -> int:
    """Record these contacts' consent for ``channel`` as withdrawn (a contact without a consent row
    gets a withdrawn one); a withdrawal keeps its first date. Returns the consents changed now."""
    ids = sorted(set(contact_ids))
    if not ids:
        return 0
    stmt = upsert_insert(conn, consents).values(
        [
            {"contact_id": i, "channel": channel, "granted": False, "source": source[:200], "recorded_at": now}
            for i in ids
        ]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[consents.c.contact_id, consents.c.channel],
        set_={"granted": False, "source": source[:200], "recorded_at": now},
        where=consents.c.granted.is_(True),  # a withdrawal keeps its first date
    ).returning(consents.c.contact_id)
    return len((await conn.execute(stmt)).all())


def _holders(channel: str, address: str) -> Any:
    """Contacts whose address on this (not keyed) channel is ``address`` as suppressions write it."""
    spec = spec_of(channel)
    if spec.keyed:
        raise ValueError(f"{channel}: a keyed channel's addresses are not looked up by value")
    column: Any = contacts.c[spec.contact_field]
    return (func.lower(column) if spec.lower_case else column) == address


async def opt_out_address(
    engine: AsyncEngine, channel: str, address: str, now: datetime, *, reason: str, source: str
) -> OptedOut:
    """An address refused the channel (an SMS STOP): suppress it and withdraw that channel's consent
    of every contact that has it, in one committed transaction. Idempotent."""
    address = spec_of(channel).suppression_address(address)
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        added = await suppress_addresses(conn, channel, [address], reason, source, now)
        ids = list((await conn.execute(select(contacts.c.id).where(_holders(channel, address)))).scalars())
        withdrawn = 0
        for start in range(0, len(ids), IDS_PER_QUERY):
            withdrawn += await withdraw_consents(conn, ids[start : start + IDS_PER_QUERY], channel, source, now)
    return OptedOut(suppressed=added, contacts=len(ids), consents_withdrawn=withdrawn)


async def opt_out_im(
    engine: AsyncEngine, key: str, ids: Sequence[str], now: datetime, *, reason: str, source: str
) -> OptedOut:
    """An id refused its IM network (a WhatsApp STOP from ``+E164``): every contact whose id under
    ``key`` is one of ``ids`` (spellings of the same id, the first the canonical one; for a phone key a
    contact without one stands in with its phone, as ``ChannelSpec.address`` does) has its IM consent
    withdrawn, and ``key:<ids[0]>`` plus each such contact's own ``key:<id>`` go on the IM suppression
    list; one committed transaction. Idempotent. The contacts are looked up before it (a scan of
    their ids, kept outside the write lock)."""
    spec = spec_of("im")
    wanted = [i.strip() for i in ids if i and i.strip()]
    if not wanted:
        return OptedOut(suppressed=0, contacts=0, consents_withdrawn=0)
    query = select(contacts.c.id, contacts.c.phone, contacts.c.im_ids).where(keyed_id(spec, key).in_(wanted))
    async with engine.connect() as conn:
        holders = (await conn.execute(query)).all()
    addresses = [f"{key}:{wanted[0]}", *(a for row in holders if (a := spec.address(row._mapping, key)))]
    ids_held = sorted({row.id for row in holders})
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        added = await suppress_addresses(conn, "im", addresses, reason, source, now)
        withdrawn = 0
        for start in range(0, len(ids_held), IDS_PER_QUERY):
            withdrawn += await withdraw_consents(conn, ids_held[start : start + IDS_PER_QUERY], "im", source, now)
    return OptedOut(suppressed=added, contacts=len(ids_held), consents_withdrawn=withdrawn)


async def suppress_sent_address(
    engine: AsyncEngine,
    provider_id: str,
    reason: str,
    source: str | None,
    now: datetime,
    *,
    fallback: Sequence[str] = (),
) -> int:
    """A provider receipt's suppression for keyed (IM) ledger rows, which ``record_receipt`` leaves
    alone: the address each row with ``provider_id`` was sent to (its contact's id under the row's
    provider, as ``ChannelSpec.address`` writes it: ``whatsapp:+E164``) goes on the row's channel's
    list. No such row yet (the receipt is parked until the dispatcher records it): the ``fallback``
    IM addresses instead (the receipt's own). Returns the suppression rows added."""
    query = (
        select(deliveries.c.channel, deliveries.c.provider, contacts.c.phone, contacts.c.im_ids)
        .join(contacts, contacts.c.id == deliveries.c.contact_id)
        .where(deliveries.c.provider_id == provider_id)
    )
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        rows = (await conn.execute(query)).all()
        wanted: dict[str, list[str]] = {}
        for row in rows:
            spec = spec_of(row.channel)
            if spec.keyed and row.provider:
                address = spec.address(row._mapping, row.provider)
                if address:
                    wanted.setdefault(row.channel, []).append(address)
        if not rows:
            wanted["im"] = list(fallback)
        added = 0
        for channel, addresses in wanted.items():
            added += await suppress_addresses(conn, channel, addresses, reason, source, now)
    return added


async def lift_suppression(engine: AsyncEngine, channel: str, address: str, *, reasons: Collection[str]) -> Lifted:
    """Remove the address's suppression only if it was made for one of ``reasons`` (START lifts a
    STOP, never a hard bounce). Consent is left as it is."""
    address = spec_of(channel).suppression_address(address)
    here = (suppressions.c.channel == channel) & (suppressions.c.address == address)
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        removed = await conn.execute(delete(suppressions).where(here, suppressions.c.reason.in_(sorted(reasons))))
        kept = await conn.scalar(select(suppressions.c.reason).where(here))
    return Lifted(lifted=removed.rowcount or 0, kept_reason=kept)


# ---------------------------------------------------------------- reading back


async def event_counts(
    engine: AsyncEngine, *, campaign_id: str | None = None, since_id: int = 0
) -> dict[tuple[str, str | None], int]:
    """(kind, label) → events, optionally for one campaign and after an event id."""
    stmt = select(events.c.kind, events.c.label, func.count()).where(events.c.id > since_id)
    if campaign_id is not None:
        stmt = stmt.where(events.c.campaign_id == campaign_id)
    stmt = stmt.group_by(events.c.kind, events.c.label)
    async with engine.connect() as conn:
        return {(kind, lab): n for kind, lab, n in await conn.execute(stmt)}


async def last_event_id(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.coalesce(func.max(events.c.id), literal(0)))) or 0)


def _fixed(value: str) -> BindParameter[str]:
    """A constant of the query written into its text (``literal_execute``), not sent as a parameter:
    PostgreSQL plans a prepared statement once for any parameter values, and not knowing the kind
    and label asked for, it may plan to read every event of that kind (a hash join) instead of each
    delivery's few through the index."""
    return bindparam(None, value, literal_execute=True)


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), IDS_PER_QUERY):
        yield ids[start : start + IDS_PER_QUERY]
