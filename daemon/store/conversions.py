"""Conversions in the database (persistence only): the set-based look-ups that crediting a batch of
orders needs, and writing the credited rows (the report's sums are read by ``topslot.reporting.data``).

What counts and who gets the credit is decided in ``topslot.attribution``: ``attribution.record``
(through ``attribution.evidence``) calls the look-ups below a few times per batch and
``insert_conversions`` once. Each function takes an open connection (the caller's transaction) and
plain values, and returns the small row types defined here.

A delivery counts as *handed over* in one of ``topslot.delivery.MAYBE_HANDED_OVER`` (the treated
group of the lift); a *holdout* row is ``skipped`` with the skip reason the caller names. Inserting
an order id already stored with the same refund flag does nothing (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from topslot.coupons import codes
from topslot.delivery import MAYBE_HANDED_OVER
from topslot.delivery import DeliveryState as S
from topslot.store.coupons import GENERATED_POOL_PREFIX
from topslot.store.dialect import upsert_insert
from topslot.store.schema import contacts, conversions, coupon_codes, deliveries, events

_MAYBE_HANDED_OVER = tuple(sorted(MAYBE_HANDED_OVER))  # in SQL: a stable order
HANDED_OUT_STATES = ("reserved", "assigned")  # coupon codes given to a contact


# ---------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """The columns of one delivery that attribution reads."""

    id: int
    campaign_id: str
    contact_id: int
    channel: str
    slot: str
    state: str
    skip_reason: str | None
    coupon_code: str | None
    due_utc: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class HandedOutCode:
    """A coupon code reserved for or assigned to a contact by a campaign."""

    code: str  # as stored
    campaign_id: str
    contact_id: int
    generated: bool  # from a campaign's generated-code pool (else from an imported pool)


@dataclass(frozen=True, slots=True)
class StoredCredit:
    """The attribution columns of a stored conversion."""

    attributed_by: str
    campaign_id: str | None
    delivery_id: int | None
    channel: str | None
    slot: str | None
    contact_id: int | None
    coupon_code: str | None


@dataclass(frozen=True, slots=True)
class StoredClick:
    """A click recorded on a delivery."""

    delivery_id: int
    occurred_at: datetime
    label: str | None  # human | scanner | None (topslot.tracking.classify)


# ---------------------------------------------------------------- conversions


async def stored_keys(conn: AsyncConnection, order_ids: Iterable[str]) -> set[tuple[str, str, bool]]:
    """(kind, id, refund) of the stored conversions (orders and signups) of ``order_ids``."""
    query = select(conversions.c.kind, conversions.c.order_id, conversions.c.refund).where(
        conversions.c.order_id.in_(sorted(set(order_ids)))
    )
    return {(r.kind, r.order_id, bool(r.refund)) for r in await conn.execute(query)}


async def order_credits(conn: AsyncConnection, order_ids: Iterable[str]) -> dict[str, StoredCredit]:
    """Order id → the credit of its stored order (not refund) row."""
    ids = sorted(set(order_ids))
    if not ids:
        return {}
    query = select(
        conversions.c.order_id,
        conversions.c.attributed_by,
        conversions.c.campaign_id,
        conversions.c.delivery_id,
        conversions.c.channel,
        conversions.c.slot,
        conversions.c.contact_id,
        conversions.c.coupon_code,
    ).where(conversions.c.order_id.in_(ids), conversions.c.refund.is_(False), conversions.c.kind == "order")
    return {
        r.order_id: StoredCredit(
            r.attributed_by, r.campaign_id, r.delivery_id, r.channel, r.slot, r.contact_id, r.coupon_code
        )
        for r in await conn.execute(query)
    }


async def insert_conversions(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Insert ``rows`` (``conversions`` columns), skipping those whose (kind, id, refund) is stored;
    the ``attributed_by`` of each row written."""
    if not rows:
        return []
    stmt = upsert_insert(conn, conversions).on_conflict_do_nothing().returning(conversions.c.attributed_by)
    return list((await conn.execute(stmt, list(rows))).scalars().all())


# ---------------------------------------------------------------- coupon codes, contacts, ledger, clicks


async def handed_out_codes(conn: AsyncConnection, spellings: Iterable[str]) -> dict[str, HandedOutCode]:
    """Stored code → its owner, for the handed-out codes stored exactly as one of ``spellings``
    (an index look-up)."""
    wanted = sorted(set(spellings))
    if not wanted:
        return {}
    return await _handed_out(conn, coupon_codes.c.code.in_(wanted), coupon_codes.c.code)


async def handed_out_by_canonical(
    conn: AsyncConnection, canonical: Iterable[str], pools: Iterable[str]
) -> dict[str, HandedOutCode]:
    """Canonical form → its owner, for the handed-out codes of ``pools`` whose canonical form
    (``topslot.coupons.codes.canonical``, computed in SQL) is one of ``canonical``. A scan of those
    pools' handed-out codes, bounded by the (pool, state, id) index."""
    wanted, among = sorted(set(canonical)), sorted(set(pools))
    if not wanted or not among:
        return {}
    expression = canonical_sql(coupon_codes.c.code)
    where = and_(
        coupon_codes.c.pool.in_(among),
        coupon_codes.c.state.in_(HANDED_OUT_STATES),
        expression.in_(wanted),
    )
    return await _handed_out(conn, where, expression)


async def _handed_out(conn: AsyncConnection, where: Any, key_column: Any) -> dict[str, HandedOutCode]:
    """Handed-out codes matching ``where``, by ``key_column``; an assigned code beats a reserved one,
    else the first stored wins."""
    query = (
        select(
            key_column.label("key"),
            coupon_codes.c.code,
            coupon_codes.c.pool,
            coupon_codes.c.state,
            coupon_codes.c.campaign_id,
            coupon_codes.c.contact_id,
        )
        .where(where, coupon_codes.c.contact_id.is_not(None), coupon_codes.c.campaign_id.is_not(None))
        .order_by(coupon_codes.c.id)
    )
    result: dict[str, HandedOutCode] = {}
    states: dict[str, str] = {}
    for r in await conn.execute(query):
        if r.key in result and not (r.state == "assigned" and states[r.key] != "assigned"):
            continue
        result[r.key] = HandedOutCode(r.code, r.campaign_id, r.contact_id, r.pool.startswith(GENERATED_POOL_PREFIX))
        states[r.key] = r.state
    return result


def canonical_sql(column: Any) -> Any:
    """``topslot.coupons.codes.canonical`` as an SQL expression (upper-case, separators dropped,
    O→0, I/L→1, U→V): portable ``upper``/``replace`` calls, the same on SQLite and PostgreSQL."""
    expression = func.upper(column)
    for separator in codes.SEPARATORS:
        expression = func.replace(expression, separator, "")
    for typed, meant in (("O", "0"), ("I", "1"), ("L", "1"), ("U", "V")):
        expression = func.replace(expression, typed, meant)
    return expression


async def contact_ids(conn: AsyncConnection, external_ids: Iterable[str | None]) -> dict[str, int]:
    """External id → contact id, for the stored contacts among ``external_ids``."""
    wanted = sorted({r for r in external_ids if r})
    if not wanted:
        return {}
    query = select(contacts.c.external_id, contacts.c.id).where(contacts.c.external_id.in_(wanted))
    return {r.external_id: r.id for r in await conn.execute(query)}


_LEDGER_COLUMNS = (  # LedgerRow's fields
    deliveries.c.id,
    deliveries.c.campaign_id,
    deliveries.c.contact_id,
    deliveries.c.channel,
    deliveries.c.slot,
    deliveries.c.state,
    deliveries.c.skip_reason,
    deliveries.c.coupon_code,
    deliveries.c.due_utc,
    deliveries.c.updated_at,
)


def _ledger_row(r: Any) -> LedgerRow:
    return LedgerRow(**r._mapping)  # the columns of _LEDGER_COLUMNS are its fields


def _handed_over() -> Any:
    return deliveries.c.state.in_(_MAYBE_HANDED_OVER)


def _handed_over_or_held(holdout_reason: str) -> Any:
    return or_(_handed_over(), and_(deliveries.c.state == S.SKIPPED, deliveries.c.skip_reason == holdout_reason))


async def ledger_rows(conn: AsyncConnection, delivery_ids: Iterable[int]) -> dict[int, LedgerRow]:
    """Delivery id → its row, for the stored ones among ``delivery_ids`` (any state)."""
    ids = sorted(set(delivery_ids))
    if not ids:
        return {}
    query = select(*_LEDGER_COLUMNS).where(deliveries.c.id.in_(ids))
    return {r.id: _ledger_row(r) for r in await conn.execute(query)}


async def handed_over_rows(
    conn: AsyncConnection, pairs: Collection[tuple[str, int]]
) -> dict[tuple[str, int], list[LedgerRow]]:
    """(campaign id, contact id) → the rows of that contact in that campaign that were handed over."""
    found: dict[tuple[str, int], list[LedgerRow]] = defaultdict(list)
    if not pairs:
        return found
    query = select(*_LEDGER_COLUMNS).where(
        deliveries.c.campaign_id.in_(sorted({p[0] for p in pairs})),
        deliveries.c.contact_id.in_(sorted({p[1] for p in pairs})),
        _handed_over(),
    )
    for r in await conn.execute(query):
        if (r.campaign_id, r.contact_id) in pairs:
            found[(r.campaign_id, r.contact_id)].append(_ledger_row(r))
    return found


async def handed_over_or_held_rows(
    conn: AsyncConnection, contact_ids: Iterable[int], *, holdout_reason: str
) -> dict[int, list[LedgerRow]]:
    """Contact id → its rows (any campaign) that were handed over or held out (``skipped`` for
    ``holdout_reason``)."""
    found: dict[int, list[LedgerRow]] = defaultdict(list)
    people = sorted(set(contact_ids))
    if not people:
        return found
    query = select(*_LEDGER_COLUMNS).where(deliveries.c.contact_id.in_(people), _handed_over_or_held(holdout_reason))
    for r in await conn.execute(query):
        found[r.contact_id].append(_ledger_row(r))
    return found


async def clicks(conn: AsyncConnection, delivery_ids: Iterable[int]) -> list[StoredClick]:
    """The clicks recorded on ``delivery_ids``, whatever their label."""
    ids = sorted(set(delivery_ids))
    if not ids:
        return []
    query = select(events.c.delivery_id, events.c.occurred_at, events.c.label).where(
        events.c.delivery_id.in_(ids), events.c.kind == "click"
    )
    return [StoredClick(r.delivery_id, r.occurred_at, r.label) for r in await conn.execute(query)]
