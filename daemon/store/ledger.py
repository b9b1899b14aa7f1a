"""The delivery ledger: writing plans idempotently, skipping rows whose contact no longer qualifies,
bucket queries and batch claims with leases.

One row per (campaign, contact, channel, slot_date, slot), enforced by a UNIQUE key, so re-planning,
restarts and a second node can never create a second row. Only rows still ``planned`` (or
``skipped`` by a plan) are ever rewritten; claimed and sent rows are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, Select, and_, bindparam, case, delete, exists, func, literal, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.campaign import Campaign, FrequencyCap
from topslot.campaign_version import CampaignVersion
from topslot.channel import CHANNELS
from topslot.delivery import HANDED_OVER, PLAN_SKIP_REASONS
from topslot.delivery import DeliveryState as S
from topslot.delivery import SkipReason as R
from topslot.pacing import QuietRules
from topslot.store import versions
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import execute_rows, plan_for_values, unnest_rows, upsert_insert
from topslot.store.engagement import engaged_earlier
from topslot.store.frequency import skip_over_cap
from topslot.store.schema import UTCDateTime, contacts, coupon_pools, deliveries, dispatch_starts
from topslot.store.segments import audience_filter, has_address, has_consent, is_suppressed

# States a plan may (re)write; anything else has been handed to a dispatcher and is left alone.
REPLANNABLE = (S.PLANNED, S.SKIPPED)
# Reasons a plan itself gives; a row skipped for another reason (e.g. holdout) is not revived.
LEDGER_KEY = ("campaign_id", "contact_id", "channel", "slot_date", "slot")


@dataclass(frozen=True, slots=True)
class BucketRow:
    """Planned rows of one campaign and channel due at one instant."""

    campaign_id: str
    channel: str
    due_utc: datetime
    dispatch_start_utc: datetime
    count: int


@dataclass(frozen=True, slots=True, order=True)
class Claimed:
    delivery_id: int
    contact_id: int
    lease_epoch: int


# ---------------------------------------------------------------- campaigns


async def record_campaign(engine: AsyncEngine, campaign: Campaign, config_hash: str, now: datetime) -> None:
    """Insert or refresh the row of a campaign given in code, its version ``config_hash`` with no
    mtime (``topslot.store.versions.record``; the daemon records the version of the files)."""
    await versions.record(engine, campaign, CampaignVersion(config_hash, None), now)


# ---------------------------------------------------------------- writing a plan


_PG_PLAN_LOCK = 0x74_70_6C_6E  # "tpln": the first key of the per-campaign plan-run advisory locks
# this process's turns (SQLite: one node, one process), per event loop (a lock belongs to one)
_plan_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def plan_turn(engine: AsyncEngine, campaign_id: str) -> AsyncIterator[None]:
    """Plan runs of one campaign take turns, in this process and (PostgreSQL: a session advisory
    lock on a connection of its own, held for the run) on every node. Two runs side by side would
    each retire the rows the other wrote (``retire_unplanned`` keeps only its own run's), and the
    bucket would be left to whichever retired last."""
    turns = _plan_turns.setdefault(asyncio.get_running_loop(), {})
    lock = turns.setdefault(campaign_id, asyncio.Lock())
    async with lock:
        if engine.dialect.name != "postgresql":
            yield
            return
        async with engine.connect() as conn:
            key = (literal(_PG_PLAN_LOCK, Integer), func.hashtext(campaign_id))
            await conn.execute(select(func.pg_advisory_lock(*key)))
            await conn.commit()  # the lock is the session's: no transaction is kept open meanwhile
            try:
                yield
            finally:
                await conn.execute(select(func.pg_advisory_unlock(*key)))
                await conn.commit()


async def write_plan_batch(
    engine: AsyncEngine,
    rows: Sequence[Mapping[str, Any]],
    *,
    plan_run: str,
    arrive_within: timedelta,
    once: bool,
    now: datetime,
) -> int:
    """Upsert one batch of planner rows in one transaction; returns how many rows were written.

    ``once``: a contact × channel that already has a row in the dispatcher's hands (claimed, sent,
    ...) gets no new row, so a re-plan after a slot has passed can never send twice (callers pass
    False when ``has_handed_over`` says no row of the campaign is, saving a query per batch).
    """
    if not rows:
        return 0
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        if once:
            taken = await _handed_over(conn, rows)
            if taken:
                rows = [r for r in rows if (r["contact_id"], r["channel"]) not in taken]
                if not rows:
                    return 0
        per_row = {
            "contact_id": [r["contact_id"] for r in rows],
            "channel": [r["channel"] for r in rows],
            "slot_date": [r["slot_date"] for r in rows],
            "slot": [r["slot"] for r in rows],
            "due_utc": [r["due_utc"] for r in rows],
            "timezone": [r["timezone"] for r in rows],
            "tz_source": [r["tz_source"] for r in rows],
            "country": [r.get("country") for r in rows],
            "slot_basis": [r.get("slot_basis") for r in rows],
            "fallback_of": [r.get("fallback_of") for r in rows],
            "state": [r["state"] for r in rows],
            "skip_reason": [r["skip_reason"] for r in rows],
        }
        shared = {"campaign_id": rows[0]["campaign_id"], "plan_run": plan_run, "created_at": now, "updated_at": now}
        if conn.dialect.name == "postgresql":
            # One statement per batch over arrays (unnest): no per-row statement or round trip.
            await conn.execute(_plan_upsert(conn, from_arrays=True), {**per_row, **shared})
        else:
            sql, values = _driver_upsert(conn, per_row, shared)
            await conn.run_sync(execute_rows, sql, values)  # SQLite: multi-row statements
        # A bucket seen for the first time starts as early as it may (``arrive_within`` before it is
        # due) until ``set_dispatch_starts`` sizes it; a bucket already sized keeps its start.
        buckets = sorted({(r["channel"], r["due_utc"]) for r in rows if r["state"] == S.PLANNED})
        if buckets:
            first_seen = upsert_insert(conn, dispatch_starts).on_conflict_do_nothing()
            campaign_id = rows[0]["campaign_id"]
            starts = [
                {"campaign_id": campaign_id, "channel": ch, "due_utc": due, "start_utc": due - arrive_within}
                for ch, due in buckets
            ]
            await conn.execute(first_seen, starts)
    return len(rows)


_DRIVER_UPSERT: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}  # dialect name → compiled once


def _driver_upsert(
    conn: AsyncConnection, per_row: Mapping[str, list[Any]], shared: Mapping[str, Any]
) -> tuple[str, list[tuple[Any, ...]]]:
    """The plan's upsert (``_plan_upsert``) as the driver's SQL and one tuple of positional values per
    row, each value converted by its column type's bind processor, as SQLAlchemy would, for
    ``execute_rows`` (multi-row statements on SQLite), without a parameter dict built and processed
    per row in Python (the hot spot of a large plan on SQLite)."""
    dialect = conn.dialect
    found = _DRIVER_UPSERT.get(dialect.name)
    if found is None:
        compiled = _plan_upsert(conn, from_arrays=False).compile(dialect=dialect, column_keys=[*_PER_ROW, *_SHARED])
        assert compiled.positiontup is not None, "a positional paramstyle"
        constants = {k: b.effective_value for k, b in compiled.binds.items() if k not in _PER_ROW + _SHARED}
        found = _DRIVER_UPSERT[dialect.name] = (compiled.string, tuple(compiled.positiontup), constants)
    sql, positions, constants = found
    columns: list[Iterable[Any]] = []
    for name in positions:
        column = deliveries.c.get(name)
        process = column.type.dialect_impl(dialect).bind_processor(dialect) if column is not None else None
        if name in per_row:
            columns.append(per_row[name] if process is None else _converted(per_row[name], process))
        else:
            value = shared[name] if name in shared else constants[name]
            columns.append(itertools.repeat(value if process is None or value is None else process(value)))
    return sql, list(zip(*columns))  # noqa: B905 - as long as the per-row lists (the repeats never end)


def _converted(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """``values`` through a bind processor, each distinct value once: a plan's dates and instants
    repeat (a few slots per zone), and the processors format text in Python."""
    done = {value: process(value) for value in set(values)}
    return [done[value] for value in values]


_PER_ROW = (
    "contact_id", "channel", "slot_date", "slot", "due_utc", "timezone", "tz_source", "country",
    "slot_basis", "fallback_of", "state", "skip_reason",
)  # fmt: skip
_SHARED = ("campaign_id", "plan_run", "created_at", "updated_at")


def _plan_upsert(conn: AsyncConnection, *, from_arrays: bool) -> Any:
    """The plan's upsert: an executemany of rows, or (``from_arrays``, PostgreSQL) one INSERT from
    ``unnest`` over one array parameter per column."""
    stmt = upsert_insert(conn, deliveries)
    if from_arrays:
        shared = [bindparam(name, type_=deliveries.c[name].type) for name in _SHARED]
        stmt = stmt.from_select([*_PER_ROW, *_SHARED], unnest_rows(deliveries, _PER_ROW, *shared))
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[deliveries.c[k] for k in LEDGER_KEY],
        set_={
            "due_utc": ex.due_utc,
            "timezone": ex.timezone,
            "tz_source": ex.tz_source,
            "country": ex.country,
            "slot_basis": ex.slot_basis,
            "fallback_of": ex.fallback_of,
            "state": ex.state,
            "skip_reason": ex.skip_reason,
            "plan_run": ex.plan_run,
            "updated_at": ex.updated_at,
        },
        where=_replannable(),
    )


def _replannable() -> Any:
    # Spelled as ORs, not IN: an expanding IN cannot go in an executemany's ON CONFLICT clause.
    revivable = or_(*(deliveries.c.skip_reason == reason for reason in PLAN_SKIP_REASONS))
    return or_(deliveries.c.state == S.PLANNED, and_(deliveries.c.state == S.SKIPPED, revivable))


async def has_handed_over(engine: AsyncEngine, campaign_id: str) -> bool:
    """Whether any row of the campaign has left the planner's hands (claimed, sent, ...)."""
    query = select(exists().where(deliveries.c.campaign_id == campaign_id, deliveries.c.state.notin_(REPLANNABLE)))
    async with engine.connect() as conn:
        return bool(await conn.scalar(query))


async def _handed_over(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> set[tuple[int, str]]:
    campaign_id = rows[0]["campaign_id"]
    ids = sorted({r["contact_id"] for r in rows})
    query = select(deliveries.c.contact_id, deliveries.c.channel).where(
        deliveries.c.campaign_id == campaign_id,
        deliveries.c.contact_id.in_(ids),
        deliveries.c.state.notin_(REPLANNABLE),
    )
    return {(row.contact_id, row.channel) for row in await conn.execute(query)}


async def retire_unplanned(engine: AsyncEngine, campaign: Campaign, plan_run: str, now: datetime) -> dict[str, int]:
    """Rows still ``planned`` that this plan run did not write become ``skipped``, with why.

    Reasons: its slot passed beyond the grace period (``missed_slot``), another slot replaced it
    (``replanned``), the contact is suppressed / lost consent / lost the address for the channel, or
    left the segment (``left_segment``).
    """
    counts: dict[str, int] = {}
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        for channel in CHANNELS:  # a channel dropped from the campaign retires its rows too
            stale = and_(
                deliveries.c.campaign_id == campaign.id,
                deliveries.c.channel == channel,
                deliveries.c.state == S.PLANNED,
                or_(deliveries.c.plan_run.is_(None), deliveries.c.plan_run != plan_run),
            )
            sibling = deliveries.alias("sibling")
            replaced = exists(
                select(literal(1)).where(
                    sibling.c.campaign_id == deliveries.c.campaign_id,
                    sibling.c.contact_id == deliveries.c.contact_id,
                    sibling.c.channel == deliveries.c.channel,
                    sibling.c.plan_run == plan_run,
                    sibling.c.state == S.PLANNED,
                )
            )
            missed = deliveries.c.due_utc < now - campaign.schedule.missed_slot.grace
            reason = case(
                (missed, R.MISSED_SLOT),
                (replaced, R.REPLANNED),
                else_=ineligibility_reason(campaign, channel, now, default=R.LEFT_SEGMENT),
            )
            counts.update(await _skip(conn, stale, reason, now))
    return counts


async def skip_ineligible(
    conn: AsyncConnection, campaign: Campaign, channel: str, rows_where: Any, now: datetime
) -> dict[str, int]:
    """Skip the ``planned`` rows matching ``rows_where`` whose contact no longer qualifies."""
    qualifies = exists(
        select(literal(1))
        .select_from(contacts)
        .where(
            contacts.c.id == deliveries.c.contact_id,
            audience_filter(campaign.audience, now),
            has_address(channel, campaign.provider_for(channel)),
            has_consent(channel),
            not_(is_suppressed(channel, campaign.provider_for(channel))),
        )
    )
    where = and_(rows_where, deliveries.c.state == S.PLANNED, not_(qualifies))
    return await _skip(conn, where, ineligibility_reason(campaign, channel, now, default=R.LEFT_SEGMENT), now)


def ineligibility_reason(campaign: Campaign, channel: str, now: datetime, *, default: str) -> Any:
    """SQL CASE naming why a row's contact cannot get ``channel`` (``default`` when it can)."""

    def about_contact(test: Any) -> Any:
        return exists(select(literal(1)).select_from(contacts).where(contacts.c.id == deliveries.c.contact_id, test))

    provider = campaign.provider_for(channel)
    return case(
        (about_contact(is_suppressed(channel, provider)), R.SUPPRESSED),
        (not_(about_contact(has_consent(channel))), R.NO_CONSENT),
        (not_(about_contact(has_address(channel, provider))), R.NO_ADDRESS),
        else_=literal(default),
    )


async def _skip(conn: AsyncConnection, where: Any, reason: Any, now: datetime) -> dict[str, int]:
    stmt = (
        update(deliveries)
        .where(where)
        .values(state=S.SKIPPED, skip_reason=reason, updated_at=now)
        .returning(deliveries.c.skip_reason)
    )
    counts: dict[str, int] = {}
    for (why,) in await conn.execute(stmt):
        counts[why] = counts.get(why, 0) + 1
    return counts


# ---------------------------------------------------------------- buckets and dispatch starts


async def planned_buckets(engine: AsyncEngine, campaign_id: str | None = None) -> list[BucketRow]:
    """Every (campaign, channel, due instant) with planned rows, and its dispatch start."""
    query = planned_buckets_query(campaign_id).order_by("start")
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [BucketRow(r.campaign_id, r.channel, _aware(r.due_utc), _aware(r.start), r.n) for r in rows]


def planned_buckets_query(campaign_id: str | None = None) -> Select[Any]:
    """campaign_id, channel, due_utc, ``start`` (its dispatch start) and ``n`` (its planned rows) of
    every bucket with planned rows (of one campaign, if given)."""
    where = [deliveries.c.state == S.PLANNED]
    if campaign_id is not None:
        where.append(deliveries.c.campaign_id == campaign_id)
    grouped = (
        select(deliveries.c.campaign_id, deliveries.c.channel, deliveries.c.due_utc, func.count().label("n"))
        .where(*where)
        .group_by(deliveries.c.campaign_id, deliveries.c.channel, deliveries.c.due_utc)
        .subquery()
    )
    return select(
        grouped.c.campaign_id, grouped.c.channel, grouped.c.due_utc, _start_of(grouped).label("start"), grouped.c.n
    ).select_from(grouped.outerjoin(dispatch_starts, _same_bucket(grouped)))


def _same_bucket(rows: Any) -> Any:
    return and_(
        dispatch_starts.c.campaign_id == rows.c.campaign_id,
        dispatch_starts.c.channel == rows.c.channel,
        dispatch_starts.c.due_utc == rows.c.due_utc,
    )


def _start_of(rows: Any) -> Any:
    """The dispatch start of ``rows``' bucket, outer-joined to ``dispatch_starts``: its due instant if it has none."""
    return func.coalesce(dispatch_starts.c.start_utc, rows.c.due_utc, type_=UTCDateTime())


async def handed_over_in_bucket(engine: AsyncEngine, campaign_id: str, channel: str, due_utc: datetime) -> int:
    """Rows of the bucket a provider has accepted so far, whichever process or node sent them."""
    query = select(func.count()).where(
        deliveries.c.campaign_id == campaign_id,
        deliveries.c.channel == channel,
        deliveries.c.due_utc == due_utc,
        deliveries.c.state.in_(sorted(HANDED_OVER)),
    )
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def set_dispatch_starts(
    engine: AsyncEngine, campaign_id: str, starts: Iterable[tuple[str, datetime, datetime]]
) -> None:
    """``starts``: (channel, due_utc, dispatch_start_utc) per bucket; one row each in ``dispatch_starts``."""
    params = [
        {"campaign_id": campaign_id, "channel": ch, "due_utc": due, "start_utc": start} for ch, due, start in starts
    ]
    if not params:
        return
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        stmt = upsert_insert(conn, dispatch_starts)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(dispatch_starts.primary_key.columns),
            set_={"start_utc": stmt.excluded.start_utc},
            # a start already right is not rewritten (a re-plan of an unchanged campaign writes nothing here)
            where=dispatch_starts.c.start_utc != stmt.excluded.start_utc,
        )
        await conn.execute(stmt, params)


async def forget_dispatch_starts(engine: AsyncEngine, campaign_id: str, due_before: datetime) -> int:
    """Delete the campaign's dispatch starts of buckets due before ``due_before`` (buckets past
    their grace send nothing more: kept, they would pile up, one row per bucket for ever)."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        result = await conn.execute(
            delete(dispatch_starts).where(
                dispatch_starts.c.campaign_id == campaign_id, dispatch_starts.c.due_utc < due_before
            )
        )
    return int(result.rowcount or 0)


def _aware(value: datetime) -> datetime:
    # Aggregates (MIN) bypass the column type on SQLite; re-attach UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# ---------------------------------------------------------------- claims


async def claim_bucket(
    engine: AsyncEngine,
    campaign_id: str,
    channel: str,
    due_utc: datetime,
    *,
    owner: str,
    lease: timedelta,
    now: datetime,
    limit: int = 1000,
    after_id: int = 0,
    cap: FrequencyCap | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` planned rows of a bucket (ids above ``after_id``) for ``owner`` with a
    lease; one transaction. Walking ``after_id`` forward claims a bucket once through, even when the
    dispatcher hands some rows back to ``planned`` (e.g. while coupons are exhausted). With ``cap``,
    rows over it are skipped instead (``claim_batch``); an empty list means nothing is left."""
    while True:
        batch = await claim_batch(
            engine, campaign_id, channel, due_utc,
            owner=owner, lease=lease, now=now, limit=limit, after_id=after_id, cap=cap,
        )  # fmt: skip
        if batch.claimed or not batch.capped:
            return batch.claimed
        after_id = batch.last_id  # the whole batch was over the cap: on to the next one


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    """One claim transaction: the rows leased, and the ids skipped as over the frequency cap."""

    claimed: list[Claimed]
    capped: list[int]

    @property
    def last_id(self) -> int:
        """The highest id this batch took or skipped (0 for none): where the next batch starts."""
        return max([c.delivery_id for c in self.claimed] + self.capped, default=0)


async def claim_batch(
    engine: AsyncEngine,
    campaign_id: str,
    channel: str,
    due_utc: datetime,
    *,
    owner: str,
    lease: timedelta,
    now: datetime,
    limit: int = 1000,
    after_id: int = 0,
    cap: FrequencyCap | None = None,
) -> ClaimBatch:
    """``claim_bucket``'s one transaction. With ``cap`` (the frequency cap on the campaign's
    messages on the channel), the rows whose contact is over it become ``skipped`` /
    ``frequency_cap`` in the same transaction (``topslot.store.frequency.skip_over_cap``)."""
    stmt = claim_statement(
        and_(
            deliveries.c.campaign_id == campaign_id,
            deliveries.c.channel == channel,
            deliveries.c.due_utc == due_utc,
            deliveries.c.id > after_id,
        ),
        S.PLANNED,
        order_by=(deliveries.c.id,),
        owner=owner,
        lease=lease,
        now=now,
        limit=limit,
    ).returning(deliveries.c.id, deliveries.c.contact_id, deliveries.c.lease_epoch)
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await plan_for_values(conn)  # a bucket planned minutes ago has no statistics yet
        rows = (await conn.execute(stmt)).all()
        capped = await skip_over_cap(conn, [(r.id, r.contact_id) for r in rows], due_utc, cap, now) if cap else set()
    claimed = sorted(Claimed(r.id, r.contact_id, r.lease_epoch) for r in rows if r.id not in capped)
    return ClaimBatch(claimed, sorted(capped))


def claim_statement(
    where: Any, from_state: str, *, order_by: Sequence[Any], owner: str, lease: timedelta, now: datetime, limit: int
) -> Any:
    """UPDATE that leases up to ``limit`` rows in ``from_state`` matching ``where`` to ``owner``.

    A materialised CTE, not ``id IN (subquery)``: PostgreSQL may re-run an IN subquery with
    LIMIT ... SKIP LOCKED and so claim more than ``limit`` rows. SKIP LOCKED lets several nodes
    claim side by side; SQLite has one writer (BEGIN IMMEDIATE) and ignores it."""
    picked = (
        select(deliveries.c.id)
        .where(where, deliveries.c.state == from_state)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return (
        update(deliveries)
        .where(deliveries.c.id == picked.c.id, deliveries.c.state == from_state)
        .values(
            state=S.CLAIMED,
            lease_owner=owner,
            lease_epoch=deliveries.c.lease_epoch + 1,
            lease_expires_utc=now + lease,
            updated_at=now,
        )
    )


async def skip_ineligible_in_bucket(
    engine: AsyncEngine, campaign: Campaign, channel: str, due_utc: datetime, now: datetime
) -> dict[str, int]:
    where = and_(
        deliveries.c.campaign_id == campaign.id, deliveries.c.channel == channel, deliveries.c.due_utc == due_utc
    )
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        return await skip_ineligible(conn, campaign, channel, where, now)


async def skip_quiet_hours(
    engine: AsyncEngine, where: Any, state: str, rules: QuietRules, at: datetime, now: datetime
) -> int:
    """Rows in ``state`` matching ``where`` whose recipient's local time at ``at`` is inside their
    channel's quiet hours (``topslot.pacing``; judged in the row's zone and country) become ``skipped``
    / ``quiet_hours``: what a bucket checks before each claim, so a late one never sends at night.
    Returns how many; one read of the rows' distinct (channel, zone, country) first, so a bucket
    outside every window costs one small query."""
    rows = deliveries.c
    places = select(rows.channel, rows.timezone, rows.country).where(where, rows.state == state).distinct()
    async with engine.connect() as conn:
        found = (await conn.execute(places)).all()
    quiet = [
        and_(rows.channel == ch, rows.timezone == tz, rows.country.is_not_distinct_from(country))
        for ch, tz, country in found
        if rules.quiet_at(ch, country, at.astimezone(ZoneInfo(tz))) is not None
    ]
    if not quiet:
        return 0
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        counts = await _skip(conn, and_(where, rows.state == state, or_(*quiet)), literal(R.QUIET_HOURS), now)
    return sum(counts.values())


async def skip_engaged_fallbacks(engine: AsyncEngine, campaign_id: str, where: Any, now: datetime) -> int:
    """Planned fallback rows matching ``where`` (``channel_strategy: fallback``) whose earlier
    channel's message to the contact got a human open or click become ``skipped`` / ``engaged``:
    decided when their bucket fires, from the events recorded by then."""
    rows = deliveries.c
    engaged = engaged_earlier(campaign_id, rows.fallback_of, rows.contact_id)
    stmt_where = and_(where, rows.state == S.PLANNED, rows.fallback_of.is_not(None), engaged)
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        counts = await _skip(conn, stmt_where, literal(R.ENGAGED), now)
    return sum(counts.values())


async def state_counts(engine: AsyncEngine, campaign_id: str) -> dict[tuple[str, str | None], int]:
    """(state, skip_reason) → rows, for a campaign."""
    query = (
        select(deliveries.c.state, deliveries.c.skip_reason, func.count())
        .where(deliveries.c.campaign_id == campaign_id)
        .group_by(deliveries.c.state, deliveries.c.skip_reason)
    )
    async with engine.connect() as conn:
        return {(s, r): n for s, r, n in await conn.execute(query)}


@dataclass(frozen=True, slots=True)
class StatusRow:
    """Rows of one campaign in one (channel, state), by who took them or why they were skipped."""

    channel: str
    state: str
    provider: str | None  # the messenger that took them (handed-over states); "outbox": files, not sends
    reason: str | None  # skipped rows: why
    rows: int


async def status_rows(engine: AsyncEngine, campaign_id: str) -> list[StatusRow]:
    """The campaign's rows per channel, state, provider and skip reason (``topslot deliveries status``)."""
    query = (
        select(deliveries.c.channel, deliveries.c.state, deliveries.c.provider, deliveries.c.skip_reason, func.count())
        .where(deliveries.c.campaign_id == campaign_id)
        .group_by(deliveries.c.channel, deliveries.c.state, deliveries.c.provider, deliveries.c.skip_reason)
    )
    async with engine.connect() as conn:
        rows = [StatusRow(*row) for row in await conn.execute(query)]
    return sorted(rows, key=lambda r: (r.channel, r.state, r.provider or "", r.reason or ""))


async def state_totals(engine: AsyncEngine) -> dict[str, int]:
    """state → rows, over the whole ledger."""
    query = select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
    async with engine.connect() as conn:
        return {state: n for state, n in await conn.execute(query)}


async def metrics_snapshot(engine: AsyncEngine, states: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    """For ``/metrics``: rows by state (only ``states``) and codes available per imported coupon pool."""
    backlog_q = (
        select(deliveries.c.state, func.count())
        .where(deliveries.c.state.in_(list(states)))
        .group_by(deliveries.c.state)
    )
    async with engine.connect() as conn:
        backlog = {str(state): int(n) for state, n in await conn.execute(backlog_q)}
        stock_q = select(coupon_pools.c.name, coupon_pools.c.available)
        stock = {str(name): int(n) for name, n in await conn.execute(stock_q)}
    return backlog, stock


async def pending_until(engine: AsyncEngine, instant: datetime) -> int:
    """Rows whose dispatch started by ``instant`` and are not settled yet (planned, claimed, sending)."""
    query = (
        select(func.count())
        .select_from(deliveries.outerjoin(dispatch_starts, _same_bucket(deliveries)))
        .where(_start_of(deliveries) <= instant, deliveries.c.state.in_((S.PLANNED, S.CLAIMED, S.SENDING)))
    )
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)
