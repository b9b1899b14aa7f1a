"""Frequency caps in the ledger: what a plan batch is checked against, and the claim-time check
(the rule itself is ``topslot.frequency``).

At claim time the check runs in the claim's own transaction, after the rows are leased: the
contacts of the claimed rows are locked (PostgreSQL: one transaction advisory lock per contact,
taken in contact id order, so two claimers never wait on each other in a cycle; an advisory lock,
not ``contacts ... FOR UPDATE``, so that a contact import, which updates contacts in its file's
order, can never deadlock with a claim), then the rows whose contact already has ``max`` counted
messages less than ``per`` from the row's due (the row itself left out) become ``skipped`` /
``frequency_cap``. Two nodes claiming different campaigns' rows for one contact at once are so put
in turn: the second one's count (READ COMMITTED: a fresh snapshot per statement) sees the first
one's committed claim. SQLite has one writer at a time (BEGIN IMMEDIATE) and takes no lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.campaign import FrequencyCap
from topslot.delivery import DeliveryState as S
from topslot.delivery import SkipReason as R
from topslot.frequency import COUNTED, Counted
from topslot.store.schema import deliveries

_COUNTED = sorted(COUNTED)


_PG_CAP_LOCK = 0x7466_6361  # "tfca": the first key of the per-contact frequency-cap advisory locks


async def lock_contacts(conn: AsyncConnection, contact_ids: Iterable[int]) -> None:
    """PostgreSQL: this transaction's advisory lock on each contact, in id order (one statement:
    ``unnest`` yields the sorted array in order). Held until commit or rollback."""
    ids = func.unnest(literal(sorted(contact_ids), ARRAY(Integer))).table_valued("contact_id").render_derived()
    await conn.execute(select(func.pg_advisory_xact_lock(literal(_PG_CAP_LOCK, Integer), ids.c.contact_id)))


async def counted_for_plan(
    engine: AsyncEngine,
    campaign_id: str,
    channel: str,
    contact_ids: Sequence[Any],
    first_due: datetime,
    last_due: datetime,
    per: timedelta,
) -> Counted:
    """For a plan batch of ``campaign_id`` on ``channel``: the contacts' counted rows (any campaign)
    and other campaigns' ``planned`` rows due less than ``per`` from [first_due, last_due]; one query."""
    if not contact_ids:
        return Counted()
    d = deliveries.c
    query = (
        select(d.contact_id, d.due_utc, d.campaign_id, d.slot_date, d.slot, d.state)
        .where(
            d.contact_id.in_(sorted(set(contact_ids))),
            d.channel == channel,
            d.due_utc > first_due - per,
            d.due_utc < last_due + per,
            or_(d.state.in_(_COUNTED), and_(d.state == S.PLANNED, d.campaign_id != campaign_id)),
        )
        .order_by(d.contact_id, d.due_utc)
    )
    counted = Counted()
    async with engine.connect() as conn:
        for row in await conn.execute(query):
            counted.due.setdefault(row.contact_id, []).append(row.due_utc)
            if row.campaign_id == campaign_id:  # a counted state: handed over
                counted.handed_over.add((row.contact_id, row.slot_date, row.slot))
    return counted


async def skip_over_cap(
    conn: AsyncConnection, rows: Sequence[tuple[int, int]], due_utc: datetime, cap: FrequencyCap, now: datetime
) -> set[int]:
    """Of the ``claimed`` rows (delivery id, contact id) leased in this transaction, all on one
    channel and due at ``due_utc``, skip those over ``cap``; returns their ids. Call it inside the
    claim's transaction."""
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        await lock_contacts(conn, {contact for _, contact in rows})
    mine = deliveries.c.id.in_(sorted(delivery for delivery, _ in rows))
    other = deliveries.alias("other")
    near = (
        select(func.count())
        .where(
            other.c.contact_id == deliveries.c.contact_id,
            other.c.channel == deliveries.c.channel,
            other.c.id != deliveries.c.id,
            other.c.state.in_(_COUNTED),
            other.c.due_utc > due_utc - cap.per,  # bounds as parameters: SQLite has no interval arithmetic
            other.c.due_utc < due_utc + cap.per,
        )
        .scalar_subquery()
    )
    stmt = (
        update(deliveries)
        .where(mine, deliveries.c.state == S.CLAIMED, near >= cap.max)
        .values(state=S.SKIPPED, skip_reason=R.FREQUENCY_CAP, lease_owner=None, lease_expires_utc=None, updated_at=now)
        .returning(deliveries.c.id)
    )
    return {row.id for row in await conn.execute(stmt)}
