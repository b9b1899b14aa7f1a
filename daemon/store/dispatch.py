"""The ledger transitions of a send: claimed → sending → sent | retry_wait | failed | unknown.

Every transition is one committed statement over a whole chunk of rows (never one transaction per
message), and every one re-checks the lease (owner, epoch, state), so a paused node can never send
or record a row that another node has since reclaimed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, Update, and_, bindparam, func, literal, or_, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from topslot.campaign import Campaign, FrequencyCap
from topslot.delivery import Decision
from topslot.delivery import DeliveryState as S
from topslot.pacing import QuietRules
from topslot.store import coupons, receipts
from topslot.store.controls import held_campaign
from topslot.store.coupons import Reservation
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import among, column_lists, json_rows, plan_for_values, rows_at_once, unnest_values
from topslot.store.frequency import lock_contacts, skip_over_cap
from topslot.store.ledger import Claimed, claim_statement, ineligibility_reason, skip_quiet_hours
from topslot.store.schema import contacts, coupon_codes, deliveries
from topslot.store.tracking_events import suppress_addresses


@dataclass(slots=True)
class Recipient:
    """A claimed row with what rendering and sending need about its contact (the dispatcher sets
    ``coupon_code`` once it holds a code for it)."""

    delivery_id: int
    lease_epoch: int
    campaign_id: str
    channel: str
    slot: str
    slot_date: date
    due_utc: datetime
    timezone: str
    attempts: int
    coupon_code: str | None
    contact_id: int
    external_id: str
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    gender: str | None
    birth_date: date | None
    age: int | None
    country: str | None
    locale: str | None
    im_ids: dict[str, str] | None
    attributes: dict[str, Any] | None


_DELIVERY_COLUMNS = [
    deliveries.c.id.label("delivery_id"),
    deliveries.c.lease_epoch,
    deliveries.c.campaign_id,
    deliveries.c.channel,
    deliveries.c.slot,
    deliveries.c.slot_date,
    deliveries.c.due_utc,
    deliveries.c.timezone,
    deliveries.c.attempts,
    deliveries.c.coupon_code,
    deliveries.c.contact_id,
]
_CONTACT_COLUMNS = [
    contacts.c[name]
    for name in (
        "external_id", "email", "phone", "first_name", "last_name", "gender", "birth_date", "age",
        "country", "locale", "im_ids", "attributes",
    )
]  # fmt: skip


assert [c.name if c.name != "id" else "delivery_id" for c in (*_DELIVERY_COLUMNS, *_CONTACT_COLUMNS)] == [
    f.name for f in fields(Recipient)
], "load_recipients builds Recipient from its columns by position"


async def load_recipients(engine: AsyncEngine, claims: Sequence[Claimed], owner: str) -> list[Recipient]:
    """The claimed rows (still leased to ``owner``) joined with their contacts, in id order."""
    if not claims:
        return []
    values = {"ids": [c.delivery_id for c in claims], "owner": owner}
    async with engine.connect() as conn:  # SQLite: the chunk's rows in one step (rows_at_once)
        load = _load(conn.dialect.name)
        return [Recipient(*row) for row in await conn.run_sync(rows_at_once, load, values)]  # fields' order (above)


@cache
def _load(dialect: str) -> Select[Any]:
    """``load_recipients``' query, built once per dialect: a batch's ids are one parameter (``among``)."""
    return (
        select(*_DELIVERY_COLUMNS, *_CONTACT_COLUMNS)
        .join(contacts, contacts.c.id == deliveries.c.contact_id)
        .where(
            among(dialect, deliveries.c.id),
            deliveries.c.state == S.CLAIMED,
            deliveries.c.lease_owner == bindparam("owner"),
        )
        .order_by(deliveries.c.id)
    )


async def drop_ineligible(
    engine: AsyncEngine, campaign: Campaign, channel: str, recipients: Sequence[Recipient], owner: str, now: datetime
) -> list[Recipient]:
    """Skip claimed rows whose contact unsubscribed, lost consent or was suppressed since the claim
    (an unsubscribe that arrives mid-burst is honoured); returns the recipients still to send."""
    if not recipients:
        return []
    reason = ineligibility_reason(campaign, channel, now, default="")
    stmt = (
        update(deliveries)
        .where(
            among(engine.dialect.name, deliveries.c.id),
            deliveries.c.state == S.CLAIMED,
            deliveries.c.lease_owner == owner,
            reason != "",
        )
        .values(state=S.SKIPPED, skip_reason=reason, lease_owner=None, lease_expires_utc=None, updated_at=now)
        .returning(deliveries.c.id, deliveries.c.contact_id)
    )
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        dropped = (await conn.execute(stmt, {"ids": [r.delivery_id for r in recipients]})).all()
        await coupons.release(conn, campaign.id, [r.contact_id for r in dropped], now)  # a retry may hold one
    gone = {r.id for r in dropped}
    return [r for r in recipients if r.delivery_id not in gone]


# The per-chunk statements are built once (their values are bound parameters, the id lists expanding
# ones): building one with a hundred literal ids coerced each of them, every chunk.
_NOW = bindparam("now", type_=deliveries.c.updated_at.type)
# SQLite: the ids and the (id, epoch) pairs are one JSON parameter each, read by ``json_each``: one
# statement text whatever the count, where expanding IN lists (1,000 ids, 2,000 pair values) were
# rendered and bound value by value for every chunk (2.8 → 0.15 ms a chunk of 1,000, measured on an
# empty table: all of it overhead)
_MARK_SENDING = (
    update(deliveries)
    .where(
        # the ids alone first: SQLite searches a row-value IN list by no index (it read every claimed
        # row of the ledger for each chunk), a plain IN list by the primary key
        among("sqlite", deliveries.c.id),
        tuple_(deliveries.c.id, deliveries.c.lease_epoch).in_(select(*json_rows("rows", 2))),  # this claim
        deliveries.c.state == S.CLAIMED,
        deliveries.c.lease_owner == bindparam("owner"),
        deliveries.c.lease_expires_utc > _NOW,
    )
    .values(state=S.SENDING, attempts=deliveries.c.attempts + 1, updated_at=_NOW)
    .returning(deliveries.c.id)
)


# PostgreSQL: the pairs as two arrays joined by ``UPDATE … FROM unnest(…)``, one statement text
# whatever the count (the IN lists above make a chunk of 1,000 a statement of 3,000 parameters,
# prepared again for every count of rows): 28 -> 17 ms a chunk of 1,000 in bench/send_pipeline.py
_PAIRS = unnest_values({"ids": deliveries.c.id.type, "epochs": deliveries.c.lease_epoch.type})
_MARK_SENDING_PG = (
    update(deliveries)
    .where(
        deliveries.c.id == _PAIRS.c.ids,
        deliveries.c.lease_epoch == _PAIRS.c.epochs,
        deliveries.c.state == S.CLAIMED,
        deliveries.c.lease_owner == bindparam("owner"),
        deliveries.c.lease_expires_utc > _NOW,
    )
    .values(state=S.SENDING, attempts=deliveries.c.attempts + 1, updated_at=_NOW)
    .returning(deliveries.c.id)
)


async def mark_sending(engine: AsyncEngine, rows: Sequence[tuple[int, int]], owner: str, now: datetime) -> set[int]:
    """(delivery_id, lease_epoch) pairs → the ids this node may now hand to a provider.

    The lease re-check happens here, in the same statement: a row whose lease expired or moved
    to another node is not returned, and must not be sent."""
    if not rows:
        return set()
    ids = [i for i, _ in rows]
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        if conn.dialect.name == "postgresql":
            await plan_for_values(conn)
            epochs = [e for _, e in rows]
            found = await conn.execute(_MARK_SENDING_PG, {"ids": ids, "epochs": epochs, "owner": owner, "now": now})
        else:
            found = await conn.execute(_MARK_SENDING, {"ids": ids, "rows": list(rows), "owner": owner, "now": now})
        got = found.all()
    return {r.id for r in got}


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery_id: int
    contact_id: int
    decision: Decision
    channel: str = "email"
    address: str | None = None  # for a suppression (hard bounce)
    provider: str | None = None  # the messenger that took it (Messenger.provider)
    segments: int | None = None  # SMS: billed segments


async def record_outcomes(
    engine: AsyncEngine,
    campaign_id: str,
    outcomes: Sequence[Outcome],
    owner: str,
    now: datetime,
    *,
    prior_state: str = S.SENDING,
) -> None:
    """Write a chunk's results, its coupons' fate and any suppressions in one transaction: codes of
    accepted messages become assigned, codes of failed ones go back (unless still held)."""
    params = [
        {
            "d_id": o.delivery_id,
            "d_state": o.decision.state,
            "d_provider": o.decision.provider_id,
            "d_next": o.decision.next_attempt_utc,
            "d_error": o.decision.error,
            "d_via": o.provider,
            "d_segments": o.segments,
            "d_prior": prior_state,
            "d_owner": owner,
            "now": now,
        }
        for o in outcomes
    ]
    if not params:
        return
    stmt = _RECORD_OUTCOME
    accepted = [o.contact_id for o in outcomes if o.decision.state == S.SENT]
    refused = [o.contact_id for o in outcomes if o.decision.state == S.FAILED]
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await plan_for_values(conn)
        await conn.run_sync(_record_rows, stmt, params)
        await coupons.commit(conn, campaign_id, accepted, now)
        await coupons.release(conn, campaign_id, refused, now)
        for o in outcomes:
            if o.decision.suppress and o.address:  # few: a hard bounce or a STOP
                reason, source = o.decision.suppress_reason, o.decision.error
                await suppress_addresses(conn, o.channel, [o.address], reason, source, now)
        sent = [o for o in outcomes if o.decision.state == S.SENT]
        await receipts.apply_pending(  # status callbacks that beat this commit
            conn, [o.decision.provider_id for o in sent], now, [o.delivery_id for o in sent]
        )


_RECORD_OUTCOME = (
    update(deliveries)
    .where(
        deliveries.c.id == bindparam("d_id"),
        deliveries.c.state == bindparam("d_prior"),
        deliveries.c.lease_owner == bindparam("d_owner"),
    )
    .values(
        state=bindparam("d_state"),
        provider_id=bindparam("d_provider"),
        provider=func.coalesce(bindparam("d_via", type_=deliveries.c.provider.type), deliveries.c.provider),
        segments=func.coalesce(bindparam("d_segments", type_=deliveries.c.segments.type), deliveries.c.segments),
        next_attempt_utc=bindparam("d_next", type_=deliveries.c.next_attempt_utc.type),
        last_error=bindparam("d_error"),
        updated_at=_NOW,
    )
)


# PostgreSQL: the chunk's rows as arrays, ``UPDATE … FROM unnest(…)``: one statement and one round
# trip for the chunk (an executemany is a statement per row: 47 ms for 1,000 rows, against 17)
_OUTCOME_COLUMNS = {
    "d_id": deliveries.c.id.type,
    "d_state": deliveries.c.state.type,
    "d_provider": deliveries.c.provider_id.type,
    "d_next": deliveries.c.next_attempt_utc.type,
    "d_error": deliveries.c.last_error.type,
    "d_via": deliveries.c.provider.type,
    "d_segments": deliveries.c.segments.type,
}
_ROWS = unnest_values(_OUTCOME_COLUMNS)
_RECORD_OUTCOME_PG = (
    update(deliveries)
    .where(
        deliveries.c.id == _ROWS.c.d_id,
        deliveries.c.state == bindparam("d_prior"),
        deliveries.c.lease_owner == bindparam("d_owner"),
    )
    .values(
        state=_ROWS.c.d_state,
        provider_id=_ROWS.c.d_provider,
        provider=func.coalesce(_ROWS.c.d_via, deliveries.c.provider),
        segments=func.coalesce(_ROWS.c.d_segments, deliveries.c.segments),
        next_attempt_utc=_ROWS.c.d_next,
        last_error=_ROWS.c.d_error,
        updated_at=_NOW,
    )
)


def _record_rows(conn: Connection, stmt: Any, params: list[dict[str, Any]]) -> None:
    """The executemany of ``_RECORD_OUTCOME``; for a chunk, one statement instead: on PostgreSQL
    ``UPDATE … FROM unnest(…)`` (one round trip), on SQLite (3.33 and later) ``UPDATE … FROM (VALUES
    (…), (…))``: one step of the engine, where the executemany takes one per row and with it a wait
    for the interpreter lock while the loop renders and sends (see ``topslot.store.dialect``). Same
    rows, same values, same conditions (``d_prior``, ``d_owner`` and ``now`` are the chunk's)."""
    dialect = conn.dialect.name
    if dialect == "postgresql" and len(params) > 1:
        first = params[0]
        shared = {"d_prior": first["d_prior"], "d_owner": first["d_owner"], "now": first["now"]}
        conn.execute(_RECORD_OUTCOME_PG, {**column_lists(params, list(_OUTCOME_COLUMNS)), **shared})
        return
    if dialect != "sqlite" or sqlite3.sqlite_version_info < (3, 33) or len(params) < 2:
        conn.execute(stmt, params)
        return
    at = deliveries.c.updated_at.type._cached_bind_processor(conn.dialect)  # cached per dialect by SQLAlchemy
    assert at is not None, "UTCDateTime binds aware datetimes as UTC text"
    first = params[0]
    values: list[Any] = [at(first["now"])]  # the placeholders in the text's order: SET's, the rows', WHERE's
    for p in params:
        nxt = p["d_next"]
        values += (p["d_id"], p["d_state"], p["d_provider"], p["d_via"], p["d_segments"], nxt and at(nxt), p["d_error"])
    values += (first["d_prior"], first["d_owner"])
    rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(params))
    conn.exec_driver_sql(_SQLITE_RECORD.format(rows=rows), tuple(values))


_SQLITE_RECORD = (  # _RECORD_OUTCOME for many rows: v.column1..7 = id, state, provider_id, via, segments, next, error
    "UPDATE deliveries SET state = v.column2, provider_id = v.column3, provider = coalesce(v.column4, "
    "deliveries.provider), segments = coalesce(v.column5, deliveries.segments), next_attempt_utc = v.column6, "
    "last_error = v.column7, updated_at = ? FROM (VALUES {rows}) AS v "
    "WHERE deliveries.id = v.column1 AND deliveries.state = ? AND deliveries.lease_owner = ?"
)


def lost_leases(node: str, owner: str, now: datetime) -> ColumnElement[bool]:
    """Rows whose lease is gone: expired (anybody's, ``owner``'s too: a dispatch that died), or held
    by an earlier run of this very node (``node/…``, not ``owner``)."""
    return or_(
        deliveries.c.lease_expires_utc <= now,
        and_(deliveries.c.lease_owner != owner, deliveries.c.lease_owner.startswith(f"{node}/", autoescape=True)),
    )


def held_by(owners: Collection[str]) -> ColumnElement[bool]:
    """Rows leased to any of ``owners`` (processes found dead: ``topslot.dispatch.heartbeat``)."""
    return deliveries.c.lease_owner.in_(sorted(owners))


FOUND_DEAD = "connection state lost: its node was found dead while sending"
"""``last_error`` of the ``sending`` rows of a process found dead by another node. They keep their
``lease_owner``: when that node starts again, its journal (on its own disk) can prove which of them
never left (``settle_found_dead``)."""


async def recover(
    engine: AsyncEngine,
    lost: ColumnElement[bool],
    now: datetime,
    *,
    never_left: Collection[int] = (),
    found_dead: bool = False,
) -> dict[str, int]:
    """The rows ``lost`` selects (``lost_leases``, ``held_by``), whose owner is gone or may be.

    ``claimed`` rows were never handed to a provider: they go back to ``planned`` (to be claimed
    again). ``sending`` rows may or may not have left: they become ``unknown``, never resent; but
    those in ``never_left`` (their owner's hand-over journal proves nothing of them left the
    process: ``topslot.dispatch.journal``) go back to ``planned`` too, their attempt not counted.
    ``found_dead``: their owner was found dead by this node; its ``unknown`` rows say so
    (``FOUND_DEAD``) and keep their owner."""
    if never_left:
        proven = and_(deliveries.c.state == S.SENDING, deliveries.c.id.in_(sorted(never_left)), lost)
        unsent = {"state": S.PLANNED, "attempts": deliveries.c.attempts - 1, "lease_owner": None,
                  "lease_expires_utc": None, "updated_at": now}  # fmt: skip
        async with engine.execution_options(**IMMEDIATE).begin() as conn:
            back = (await conn.execute(update(deliveries).where(proven).values(**unsent))).rowcount or 0
    why = FOUND_DEAD if found_dead else "connection state lost: the node stopped while sending"
    counts = await _release(engine, lost, now, why, keep_owner=found_dead)
    return counts | ({"sending_to_planned": back} if never_left else {})


async def found_dead_rows(engine: AsyncEngine, node: str, owner: str) -> list[LostRow]:
    """The ``unknown`` rows that another node took from an earlier run of ``node`` (``FOUND_DEAD``,
    their owner kept), for that node's journal to settle when it starts again."""
    c = deliveries.c
    query = select(c.id, c.lease_owner, c.campaign_id, c.contact_id, c.channel).where(
        c.state == S.UNKNOWN,
        c.last_error == FOUND_DEAD,
        c.lease_owner != owner,
        c.lease_owner.startswith(f"{node}/", autoescape=True),
    )
    async with engine.connect() as conn:
        return [LostRow(*row) for row in await conn.execute(query)]


async def settle_found_dead(
    engine: AsyncEngine, rows: Collection[int], now: datetime, *, never_left: Collection[int]
) -> int:
    """``found_dead_rows`` read against their owners' journals: those in ``never_left`` go back to
    ``planned`` (their attempt not counted); every one of ``rows`` still ``unknown`` loses its owner
    (settled: looked at once). How many went back to planned."""
    if not rows:
        return 0
    c = deliveries.c
    mine = and_(c.id.in_(sorted(rows)), c.state == S.UNKNOWN, c.last_error == FOUND_DEAD)
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        back = 0
        if never_left:
            planned = update(deliveries).where(mine, c.id.in_(sorted(never_left)))
            planned = planned.values(state=S.PLANNED, attempts=c.attempts - 1, lease_owner=None, last_error=None,
                                     updated_at=now)  # fmt: skip
            back = (await conn.execute(planned)).rowcount or 0
        await conn.execute(update(deliveries).where(mine).values(lease_owner=None, updated_at=now))
    return back


@dataclass(frozen=True, slots=True)
class LostRow:
    """A ``sending`` row whose lease is lost (``lost_sending``)."""

    delivery_id: int
    owner: str
    campaign_id: str
    contact_id: int
    channel: str


async def lost_sending(engine: AsyncEngine, lost: ColumnElement[bool]) -> list[LostRow]:
    """The ``sending`` rows ``recover`` would find lost."""
    c = deliveries.c
    query = select(c.id, c.lease_owner, c.campaign_id, c.contact_id, c.channel).where(c.state == S.SENDING, lost)
    async with engine.connect() as conn:
        return [LostRow(*row) for row in await conn.execute(query)]


async def release_bucket(
    engine: AsyncEngine, owner: str, campaign_id: str, channel: str, due_utc: datetime, now: datetime
) -> dict[str, int]:
    """``owner``'s rows of one bucket, after a step of its send failed and before it is tried again
    (or given up): ``claimed`` → ``planned`` (nothing was sent), ``sending`` → ``unknown`` (it may
    have been: its outcome could not be recorded). Counts as ``recover``'s."""
    mine = and_(
        deliveries.c.lease_owner == owner,
        deliveries.c.campaign_id == campaign_id,
        deliveries.c.channel == channel,
        deliveries.c.due_utc == due_utc,
    )
    return await _release(engine, mine, now, "the outcome could not be recorded: the database refused it")


async def _release(
    engine: AsyncEngine, which: ColumnElement[bool], now: datetime, why: str, *, keep_owner: bool = False
) -> dict[str, int]:
    counts: dict[str, int] = {}
    unknown: dict[str, Any] = {"last_error": literal(why)} | ({} if keep_owner else {"lease_owner": None})
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        for state, target, extra in (
            (S.CLAIMED, S.PLANNED, {"lease_owner": None}),
            (S.SENDING, S.UNKNOWN, unknown),
        ):
            result = await conn.execute(
                update(deliveries)
                .where(deliveries.c.state == state, which)
                .values(state=target, lease_expires_utc=None, updated_at=now, **extra)
            )
            counts[f"{state}_to_{target}"] = result.rowcount or 0
    return counts


async def claim_retries(
    engine: AsyncEngine,
    owner: str,
    lease: timedelta,
    now: datetime,
    limit: int = 1000,
    *,
    cap_of: Callable[[str, str], FrequencyCap | None] | None = None,
    exclude: Collection[str] = (),
) -> list[tuple[str, str, datetime, Claimed]]:
    """Claim ``retry_wait`` rows that are due again: (campaign_id, channel, due_utc, claim).
    ``cap_of(campaign_id, channel)``: the frequency cap on those messages; a retry over it is
    skipped (``frequency_cap``) in the same transaction instead (another campaign may have sent
    since its first attempt). None of the campaigns ``exclude`` (held back by this node) is claimed."""
    wanted = [deliveries.c.next_attempt_utc <= now, ~held_campaign()]  # none of a paused or cancelled campaign
    if exclude:
        wanted.append(deliveries.c.campaign_id.not_in(sorted(exclude)))
    stmt = claim_statement(
        and_(*wanted),
        S.RETRY_WAIT,
        order_by=(deliveries.c.next_attempt_utc, deliveries.c.id),
        owner=owner,
        lease=lease,
        now=now,
        limit=limit,
    ).returning(
        deliveries.c.campaign_id, deliveries.c.channel, deliveries.c.due_utc,
        deliveries.c.id, deliveries.c.contact_id, deliveries.c.lease_epoch,
    )  # fmt: skip
    capped: set[int] = set()
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        rows = (await conn.execute(stmt)).all()
        groups: dict[tuple[str, str, datetime], list[tuple[int, int]]] = {}
        for r in rows:
            groups.setdefault((r.campaign_id, r.channel, r.due_utc), []).append((r.id, r.contact_id))
        caps = {key: cap_of(key[0], key[1]) if cap_of is not None else None for key in groups}
        if conn.dialect.name == "postgresql" and any(caps.values()):  # all at once, in id order: no deadlock
            capped_contacts = {contact for key, claimed in groups.items() if caps[key] for _, contact in claimed}
            await lock_contacts(conn, capped_contacts)
        for (campaign_id, channel, due), claimed in sorted(groups.items()):
            cap = caps[(campaign_id, channel, due)]
            if cap is not None:
                over = await skip_over_cap(conn, claimed, due, cap, now)
                released = [contact for delivery, contact in claimed if delivery in over]
                await coupons.release(conn, campaign_id, released, now)  # a retry may hold a code
                capped |= over
    return [
        (r.campaign_id, r.channel, r.due_utc, Claimed(r.id, r.contact_id, r.lease_epoch))
        for r in rows
        if r.id not in capped
    ]


async def skip_quiet_retries(engine: AsyncEngine, rules: QuietRules, now: datetime) -> int:
    """``retry_wait`` rows due again whose recipients are inside quiet hours now become ``skipped``."""
    return await skip_quiet_hours(engine, deliveries.c.next_attempt_utc <= now, S.RETRY_WAIT, rules, now, now)


async def retry_by_hand(engine: AsyncEngine, campaign_id: str, state: str, now: datetime) -> int:
    """``topslot deliveries retry``: rows in ``state`` (unknown or failed) become due for a retry now."""
    if state not in (S.UNKNOWN, S.FAILED):
        raise ValueError("only unknown or failed deliveries can be retried by hand")
    stmt = (
        update(deliveries)
        .where(deliveries.c.campaign_id == campaign_id, deliveries.c.state == state)
        .values(state=S.RETRY_WAIT, next_attempt_utc=now, last_error=f"retried by hand from {state}", updated_at=now)
    )
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        return (await conn.execute(stmt)).rowcount or 0


async def reserve_coupons(
    engine: AsyncEngine, campaign: Campaign, recipients: Sequence[Recipient], now: datetime, coupon_key: bytes | None
) -> Reservation:
    """One code per recipient's contact, recorded on the ledger rows; one transaction."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await plan_for_values(conn)
        contact_ids = [r.contact_id for r in recipients]
        reservation = await coupons.reserve(conn, campaign, contact_ids, now, coupon_key=coupon_key)
        coded = [r.delivery_id for r in recipients if r.contact_id in reservation.codes]
        if coded:  # the rows of the contacts holding a code take it, in one statement
            await conn.execute(_record_codes(conn.dialect.name), {"ids": coded})
    return reservation


@cache
def _record_codes(dialect: str) -> Update:
    """Each row's code: the one its contact holds in its campaign (what ``reserve`` returned); the
    rows' ids are one parameter (``among``). Built once per dialect."""
    code = select(coupon_codes.c.code).where(
        coupon_codes.c.campaign_id == deliveries.c.campaign_id, coupon_codes.c.contact_id == deliveries.c.contact_id
    )
    return update(deliveries).where(among(dialect, deliveries.c.id)).values(coupon_code=code.scalar_subquery())


async def unclaim(engine: AsyncEngine, ids: Sequence[int], owner: str, now: datetime) -> None:
    """Hand claimed rows back to ``planned`` (nothing was sent), e.g. while coupons are exhausted."""
    if not ids:
        return
    stmt = (
        update(deliveries)
        .where(deliveries.c.id.in_(list(ids)), deliveries.c.state == S.CLAIMED, deliveries.c.lease_owner == owner)
        .values(state=S.PLANNED, lease_owner=None, lease_expires_utc=None, updated_at=now)
    )
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await conn.execute(stmt)


async def release_claims(engine: AsyncEngine, ids: Sequence[int], owner: str, now: datetime, *, reason: str) -> None:
    """Claimed rows this node will not send after all (campaign paused, not renderable): skipped."""
    if not ids:
        return
    stmt = (
        update(deliveries)
        .where(deliveries.c.id.in_(list(ids)), deliveries.c.state == S.CLAIMED, deliveries.c.lease_owner == owner)
        .values(state=S.SKIPPED, skip_reason=reason, lease_owner=None, lease_expires_utc=None, updated_at=now)
    )
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        released = (await conn.execute(stmt.returning(deliveries.c.campaign_id, deliveries.c.contact_id))).all()
        for campaign_id in {r.campaign_id for r in released}:
            contact_ids = [r.contact_id for r in released if r.campaign_id == campaign_id]
            await coupons.release(conn, campaign_id, contact_ids, now)
