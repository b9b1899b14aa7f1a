"""The slot comparison's counts from the database: one grouped query (SQLAlchemy Core, SQLite and
PostgreSQL alike) over the recipients — ledger rows handed over (``sent``, ``delivered``,
``bounced``: the report's "sent") — per slot, evidence and channel.

Per recipient row, two grouped subqueries say what happened after:
- ``engaged``: opened by a person (a human open **or** a human click, as the report counts opens)
  and clicked by a person (``data.py``'s rules: unlabelled or ``human`` events);
- ``bought``: an order credited to that delivery by coupon or click (``REVENUE_ATTRIBUTIONS``) in
  the campaign's currency, and the delivery's net revenue in integer cents (revenue − refunds).
The outer query counts recipients, openers, clickers and converters, and sums the net revenue and
its square (cents²) so that ``topslot.reporting.stats`` gets each slot's revenue variance without a
row per recipient leaving the database.

Evidence: a row is ``randomised`` when its ``slot_basis`` is in ``topslot.delivery.RANDOMISED``
(split, exploration), else ``observational`` (first, history, default, or not recorded).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import BigInteger, Integer, and_, case, cast, false, func, literal, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.attribution.rules import REVENUE_ATTRIBUTIONS
from topslot.channel import spec_of
from topslot.delivery import HANDED_OVER, RANDOMISED
from topslot.reporting.slots import EVIDENCE, SlotCounts, SlotOverview, overview
from topslot.store.schema import conversions, deliveries, events

RECIPIENT_STATES = tuple(sorted(HANDED_OVER))
RANDOMISED_BASES = tuple(sorted(RANDOMISED))


async def slot_counts(conn: AsyncConnection, campaign_id: str, currency: str) -> list[SlotCounts]:
    """Per (evidence, slot), in ``EVIDENCE`` then slot order; channels summed (the open rate only
    over channels with ``tracks_opens``)."""
    human = or_(events.c.label.is_(None), events.c.label == "human")
    engaged = (
        select(
            events.c.delivery_id,
            func.max(case((and_(events.c.kind.in_(("open", "click")), human), 1), else_=0)).label("opened"),
            func.max(case((and_(events.c.kind == "click", human), 1), else_=0)).label("clicked"),
        )
        .where(events.c.campaign_id == campaign_id, events.c.kind.in_(("open", "click")))
        .group_by(events.c.delivery_id)
        .subquery()
    )
    signed = case((conversions.c.refund == true(), -conversions.c.revenue), else_=conversions.c.revenue)
    bought = (
        select(
            conversions.c.delivery_id,
            func.max(case((conversions.c.refund == false(), 1), else_=0)).label("converted"),
            func.sum(cast(func.round(signed * 100), BigInteger)).label("net"),
        )
        .where(
            conversions.c.campaign_id == campaign_id,
            conversions.c.kind == "order",
            conversions.c.delivery_id.isnot(None),
            conversions.c.attributed_by.in_(REVENUE_ATTRIBUTIONS),
            or_(conversions.c.currency.is_(None), conversions.c.currency == currency),
        )
        .group_by(conversions.c.delivery_id)
        .subquery()
    )
    evidence = case(
        (deliveries.c.slot_basis.in_(RANDOMISED_BASES), literal(EVIDENCE[0])), else_=literal(EVIDENCE[1])
    ).label("evidence")
    net = func.coalesce(bought.c.net, literal(0, BigInteger))
    zero = literal(0, Integer)
    inner = (
        select(
            deliveries.c.slot,
            evidence,
            deliveries.c.channel,
            func.coalesce(engaged.c.opened, zero).label("opened"),
            func.coalesce(engaged.c.clicked, zero).label("clicked"),
            func.coalesce(bought.c.converted, zero).label("converted"),
            net.label("net"),
        )
        .select_from(
            deliveries.outerjoin(engaged, engaged.c.delivery_id == deliveries.c.id).outerjoin(
                bought, bought.c.delivery_id == deliveries.c.id
            )
        )
        .where(deliveries.c.campaign_id == campaign_id, deliveries.c.state.in_(RECIPIENT_STATES))
        .subquery()
    )
    keys = (inner.c.evidence, inner.c.slot, inner.c.channel)
    stmt = select(
        *keys,
        func.count(),
        func.sum(inner.c.opened),
        func.sum(inner.c.clicked),
        func.sum(inner.c.converted),
        func.sum(inner.c.net),
        func.sum(inner.c.net * inner.c.net),
    ).group_by(*keys)
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 7)
    for kind, slot, channel, n, opened, clicked, converted, cents, squares in await conn.execute(stmt):
        t = totals[(kind, slot)]
        tracks = spec_of(channel).tracks_opens
        for i, value in enumerate((n, n if tracks else 0, opened if tracks else 0, clicked, converted, cents, squares)):
            t[i] += int(value or 0)
    return [
        SlotCounts(slot, kind, *totals[(kind, slot)])
        for kind, slot in sorted(totals, key=lambda k: (EVIDENCE.index(k[0]), k[1]))
    ]


async def build_slot_overview(
    engine: AsyncEngine, known: Mapping[str, tuple[str, str | None]], now: datetime, default_currency: str = "USD"
) -> SlotOverview:
    """The slot comparison of every campaign with recipients in the ledger, then pooled. ``known``:
    campaign id → (currency, slot_choice) of the loaded campaign files; the others count revenue in
    ``default_currency`` and have no slot_choice (a note names them)."""
    stmt = (
        select(deliveries.c.campaign_id)
        .where(deliveries.c.state.in_(RECIPIENT_STATES))
        .distinct()
        .order_by(deliveries.c.campaign_id)
    )
    per_campaign = []
    async with engine.connect() as conn:
        ids = list((await conn.execute(stmt)).scalars())
        for campaign_id in ids:
            currency, choice = known.get(campaign_id, (default_currency, None))
            per_campaign.append((campaign_id, currency, choice, await slot_counts(conn, campaign_id, currency)))
    result = overview(per_campaign, now)
    unloaded = [c for c in ids if c not in known]
    if unloaded:
        result.notes.append(
            f"campaign files not loaded ({', '.join(unloaded)}): their revenue counts in {default_currency}"
        )
    return result
