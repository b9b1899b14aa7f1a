"""Report figures from the database in a handful of grouped queries (SQLAlchemy Core, SQLite and
PostgreSQL alike). Each query selects the group key in a subquery and aggregates over it, so a key
with bound parameters (segments) groups the same on both engines.

Counting rules (docs/reporting.md):
- an event is human when labelled ``human`` or not labelled; machine when ``machine_open`` or
  ``scanner``; a delivery with a human click counts as opened by a human (images may be blocked);
- the campaign's sales are its conversions attributed by coupon or click
  (``topslot.attribution.rules.REVENUE_ATTRIBUTIONS``), grouped through ``conversions.delivery_id``;
  one with no delivery falls in the group ``(none)`` (or its own channel / slot);
- the holdout lift compares distinct contacts sent to (``rules.SENT_STATES``) with contacts held
  out, by the orders (any attribution) they placed inside the window;
- money sums are exact on both engines (summed as integer cents / millionths) and go through
  ``topslot.attribution.roi.roi_figures``;
- timing buckets count human open and click events by minutes since the delivery was handed over
  (``deliveries.updated_at`` of a row still ``sent``; see ``HANDED_OVER``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Numeric,
    and_,
    case,
    cast,
    distinct,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.attribution import roi
from topslot.attribution.rules import HOLDOUT_REASON, REVENUE_ATTRIBUTIONS
from topslot.attribution.rules import SENT_STATES as TREATED_STATES
from topslot.bounces.classify import RETURNED_KINDS
from topslot.campaign import Costs
from topslot.channel import CHANNELS, OUTBOX_PROVIDER, spec_of
from topslot.delivery import HANDED_OVER as HANDED_OVER_STATES
from topslot.delivery import IN_FLIGHT, MAYBE_HANDED_OVER, WAITING
from topslot.delivery import DeliveryState as S
from topslot.reporting import money as money_maths
from topslot.reporting.groups import group_key
from topslot.reporting.model import (
    NO_GROUP,
    DeliveryCounts,
    Engagement,
    GroupFigures,
    Report,
    ReturnedMail,
    TimingBucket,
)
from topslot.reporting.slot_data import slot_counts
from topslot.reporting.slots import compare as compare_slots
from topslot.reporting.sql_time import seconds_between
from topslot.store.schema import campaigns, contacts, conversions, deliveries, events

SENT_STATES = tuple(HANDED_OVER_STATES)
ACCEPTED_STATES = (S.SENT, S.DELIVERED)
PENDING_STATES = tuple(sorted(WAITING | IN_FLIGHT))  # not sent yet, or being sent
CHARGEABLE_STATES = tuple(sorted(MAYBE_HANDED_OVER))  # a paid provider may have it: it costs
MACHINE_LABELS = ("machine_open", "scanner")
BUCKET_EDGES = (0, 5, 10, 15, 30, 60, 120, 240, 480, 1440)  # minutes; the last bucket is open-ended
DEFAULT_TAIL = timedelta(days=7)  # after the last slot, when the campaign is no longer loaded
HANDED_OVER = deliveries.c.updated_at  # when the row went to ``sent`` (a later callback moves it)


@dataclass(frozen=True)
class ReportQuery:
    campaign_id: str
    by: str = "channel"
    segments: Sequence[tuple[str, Any]] | None = None  # (name, condition); None: contact country
    window: tuple[datetime, datetime] | None = None  # [start, end) of the holdout comparison; see ledger_window
    costs: Costs = field(default_factory=Costs)  # the campaign's; defaults: no cost, no margin, USD
    slot_choice: str | None = None  # the campaign's (first | split | learned); None: its file is not loaded


async def campaign_name(engine: AsyncEngine, campaign_id: str) -> str | None:
    async with engine.connect() as conn:
        return (await conn.execute(select(campaigns.c.name).where(campaigns.c.id == campaign_id))).scalar()


async def ledger_window(
    engine: AsyncEngine, campaign_id: str, tail: timedelta = DEFAULT_TAIL
) -> tuple[datetime, datetime] | None:
    """[first due, last due + tail): the holdout window of a campaign whose file is gone."""
    stmt = select(func.min(deliveries.c.due_utc), func.max(deliveries.c.due_utc)).where(
        deliveries.c.campaign_id == campaign_id
    )
    async with engine.connect() as conn:
        first, last = (await conn.execute(stmt)).one()
    return (first, last + tail) if first is not None else None


async def build_report(
    engine: AsyncEngine, query: ReportQuery, now: datetime, *, name: str | None = None, charts: bool = False
) -> Report:
    """Every figure of the report and the slot comparison (``slots``). ``charts`` adds the timing
    histogram and ROI per channel (HTML)."""
    if query.window is None:
        window = await ledger_window(engine, query.campaign_id) or (now, now)
        query = replace(query, window=window)
    async with engine.connect() as conn:
        groups = await _figures(conn, query, query.by, now)
        total = (await _figures(conn, query, None, now)).get("total") or _empty("total", query)
        timing = await _timing(conn, query.campaign_id) if charts else []
        if charts:
            by_channel = groups if query.by == "channel" else await _figures(conn, query, "channel", now)
        else:
            by_channel = {}
        counts = await slot_counts(conn, query.campaign_id, query.costs.currency)
    return Report(
        campaign_id=query.campaign_id,
        campaign_name=name or query.campaign_id,
        by=query.by,
        currency=query.costs.currency,
        generated_at=now,
        window=query.window or (now, now),
        groups=[groups[k] for k in sorted(groups, key=_group_order)],
        total=total,
        timing=timing,
        roi_by_channel=[by_channel[k] for k in sorted(by_channel, key=_group_order)],
        slots=compare_slots(counts, query.campaign_id, query.costs.currency, query.slot_choice),
        notes=mail_warnings([total, *(groups[k] for k in sorted(groups, key=_group_order))], query.by),
    )


COMPLAINT_WARNING = Decimal("0.001")  # 0.1 %: mailbox providers start filtering (Gmail and Yahoo block at 0.3 %)
HARD_BOUNCE_WARNING = Decimal("0.02")  # 2 %: the list has dead addresses; providers read it as a bought list


def mail_warnings(figures: list[GroupFigures], by: str) -> list[str]:
    """A note for the campaign (first of ``figures``) and each group whose complaint rate is above
    ``COMPLAINT_WARNING`` or hard bounce rate above ``HARD_BOUNCE_WARNING``."""
    notes = []
    for index, group in enumerate(figures):
        r = group.returned
        where = "the campaign" if index == 0 else f"{by} {group.key}"
        complaints, hard = r.rate(r.complaints), r.rate(r.hard_bounces)
        if complaints is not None and complaints > COMPLAINT_WARNING:
            notes.append(
                f"{where}: spam complaints are {complaints * 100:.2f} % of the email handed over "
                f"({r.complaints:,} of {r.email_sent:,}), above 0.1 %: mailbox providers filter such senders "
                "(Gmail and Yahoo block at 0.3 %)"
            )
        if hard is not None and hard > HARD_BOUNCE_WARNING:
            notes.append(
                f"{where}: hard bounces are {hard * 100:.2f} % of the email handed over "
                f"({r.hard_bounces:,} of {r.email_sent:,}), above 2 %: the list holds dead addresses "
                "(they are suppressed now)"
            )
    return notes


def _group_order(key: str) -> tuple[int, str]:
    return (1 if key in (NO_GROUP, "other") else 0, key)


# ---------------------------------------------------------------- one set of grouped queries


async def _figures(conn: AsyncConnection, q: ReportQuery, by: str | None, now: datetime) -> dict[str, GroupFigures]:
    ledger = await _ledger(conn, q, by, now)
    engagement = await _engagement(conn, q, by, now)
    sales = await _sales(conn, q, by, now)
    holdout = await _holdout(conn, q, by, now)
    returned = await _returned(conn, q, by, now)
    keys = set(ledger) | set(engagement) | set(sales) | set(holdout)
    out: dict[str, GroupFigures] = {}
    for key in keys:
        figures = _assemble(
            key, q, ledger.get(key), engagement.get(key), sales.get(key), holdout.get(key), whole=by is None
        )
        out[key] = replace(figures, returned=returned.get(key, ReturnedMail()))
    return out


def _empty(key: str, q: ReportQuery) -> GroupFigures:
    return _assemble(key, q, None, None, None, None, whole=key == "total")


def _assemble(
    key: str,
    q: ReportQuery,
    ledger: DeliveryCounts | None,
    engagement: tuple[Engagement, Engagement, int] | None,
    sales: roi.Totals | None,
    holdout: roi.LiftCounts | None,
    *,
    whole: bool = False,
) -> GroupFigures:
    """One group's figures; ``whole``: the campaign's total, which carries its fixed cost."""
    fixed = q.costs.fixed if whole else Decimal(0)
    ledger = ledger or DeliveryCounts()
    opens, clicks, unsubscribes = engagement or (Engagement(), Engagement(), 0)
    money = money_maths.figures(
        key, sales or roi.Totals(), ledger.chargeable_by_channel, holdout or roi.LiftCounts(), q.costs, fixed=fixed
    )
    return GroupFigures(
        key=key,
        deliveries=ledger,
        opens=opens,
        clicks=clicks,
        unsubscribes=unsubscribes,
        money=money,
        ctr=money_maths.ratio(clicks.human_unique, ledger.accepted),
        click_to_open=money_maths.ratio(clicks.human_unique, opens.human_unique),
    )


def _from_deliveries(needs_contacts: bool) -> Any:
    if needs_contacts:
        return deliveries.outerjoin(contacts, contacts.c.id == deliveries.c.contact_id)
    return deliveries


async def _ledger(conn: AsyncConnection, q: ReportQuery, by: str | None, now: datetime) -> dict[str, DeliveryCounts]:
    key, needs_contacts = group_key(by, now, q.segments)
    inner = (
        select(
            key.label("g"),
            deliveries.c.channel,
            deliveries.c.state,
            deliveries.c.skip_reason,
            deliveries.c.provider,
            func.coalesce(deliveries.c.segments, 1).label("units"),  # what one row is billed as
        )
        .select_from(_from_deliveries(needs_contacts))
        .where(deliveries.c.campaign_id == q.campaign_id)
        .subquery()
    )
    columns = (inner.c.g, inner.c.channel, inner.c.state, inner.c.skip_reason, inner.c.provider)
    stmt = select(*columns, func.count().label("n"), func.sum(inner.c.units).label("units")).group_by(*columns)
    tallies: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"states": defaultdict(int), "skipped": defaultdict(int), "chargeable": defaultdict(int), "outbox": 0}
    )
    for g, channel, state, reason, provider, n, units in await conn.execute(stmt):
        t = tallies[g]
        t["states"][state] += n
        if state == S.SKIPPED:
            t["skipped"][reason or "unspecified"] += n
        if provider == OUTBOX_PROVIDER:
            t["outbox"] += n if state in SENT_STATES else 0
        elif state in CHARGEABLE_STATES:
            t["chargeable"][channel] += int(units) if spec_of(channel).segmented else n
    out = {}
    for g, t in tallies.items():
        s = t["states"]
        out[g] = DeliveryCounts(
            planned=sum(s.values()),
            pending=sum(s[x] for x in PENDING_STATES),
            sent=sum(s[x] for x in SENT_STATES),
            outbox=t["outbox"],
            accepted=sum(s[x] for x in ACCEPTED_STATES),
            delivered=s[S.DELIVERED],
            bounced=s[S.BOUNCED],
            failed=s[S.FAILED],
            unknown=s[S.UNKNOWN],
            skipped=dict(sorted(t["skipped"].items())),
            chargeable_by_channel=dict(sorted(t["chargeable"].items())),
        )
    return out


def _count_if(condition: ColumnElement[bool]) -> Any:
    return func.count(case((condition, 1)))


def _unique_if(condition: ColumnElement[bool], column: Any) -> Any:
    return func.count(distinct(case((condition, column))))


async def _engagement(
    conn: AsyncConnection, q: ReportQuery, by: str | None, now: datetime
) -> dict[str, tuple[Engagement, Engagement, int]]:
    key, needs_contacts = group_key(by, now, q.segments)
    source = _from_deliveries(needs_contacts).join(events, events.c.delivery_id == deliveries.c.id)
    inner = (
        select(key.label("g"), events.c.kind, events.c.label, events.c.delivery_id)
        .select_from(source)
        .where(deliveries.c.campaign_id == q.campaign_id, events.c.kind.in_(("open", "click", "unsubscribe")))
        .subquery()
    )
    human = or_(inner.c.label.is_(None), inner.c.label == "human")
    machine = inner.c.label.in_(MACHINE_LABELS)
    is_open, is_click = inner.c.kind == "open", inner.c.kind == "click"
    d = inner.c.delivery_id
    stmt = select(
        inner.c.g,
        _unique_if(and_(or_(is_open, is_click), human), d),
        _count_if(and_(is_open, human)),
        _unique_if(and_(is_open, machine), d),
        _count_if(and_(is_open, machine)),
        _unique_if(and_(is_click, human), d),
        _count_if(and_(is_click, human)),
        _unique_if(and_(is_click, machine), d),
        _count_if(and_(is_click, machine)),
        _unique_if(inner.c.kind == "unsubscribe", d),
    ).group_by(inner.c.g)
    out = {}
    for g, ohu, oht, omu, omt, chu, cht, cmu, cmt, unsub in await conn.execute(stmt):
        out[g] = (Engagement(ohu, oht, omu, omt), Engagement(chu, cht, cmu, cmt), unsub)
    return out


def _sum_scaled(expr: Any, scale: int) -> Any:
    """Σ expr exactly on both engines: summed as integers of 1/scale (SQLite has no decimal type)."""
    return func.coalesce(func.sum(cast(func.round(expr * scale), BigInteger)), 0)


def _unscale(value: Any, scale: int) -> Decimal:
    return Decimal(int(value)) / scale


async def _returned(conn: AsyncConnection, q: ReportQuery, by: str | None, now: datetime) -> dict[str, ReturnedMail]:
    """Per group, the mail handed over (the MIME channel's sent rows, no outbox writes) and how many
    of those deliveries bounced (by kind) or drew a complaint (``topslot.bounces``)."""
    key, needs_contacts = group_key(by, now, q.segments)
    mail = [name for name in CHANNELS if spec_of(name).mime]
    feedback = and_(events.c.delivery_id == deliveries.c.id, events.c.kind.in_(("bounce", "complaint")))
    inner = (
        select(key.label("g"), deliveries.c.id.label("d"), events.c.kind, events.c.label)
        .select_from(_from_deliveries(needs_contacts).outerjoin(events, feedback))
        .where(
            deliveries.c.campaign_id == q.campaign_id,
            deliveries.c.channel.in_(mail),
            deliveries.c.state.in_(SENT_STATES),
            or_(deliveries.c.provider.is_(None), deliveries.c.provider != OUTBOX_PROVIDER),
        )
        .subquery()
    )
    bounce = inner.c.kind == "bounce"
    stmt = select(
        inner.c.g,
        func.count(distinct(inner.c.d)),
        *(_unique_if(and_(bounce, inner.c.label == kind.value), inner.c.d) for kind in RETURNED_KINDS),
        _unique_if(inner.c.kind == "complaint", inner.c.d),
    ).group_by(inner.c.g)
    return {
        g: ReturnedMail(sent, hard, soft, blocked, complaints)
        for g, sent, hard, soft, blocked, complaints in await conn.execute(stmt)
    }


async def _sales(conn: AsyncConnection, q: ReportQuery, by: str | None, now: datetime) -> dict[str, roi.Totals]:
    """Per group, the ``roi.Totals`` of the conversions credited to the campaign (see ``roi.totals``
    for the rules this reproduces in SQL: margins, refunds, purchasers, other currencies)."""
    channel = func.coalesce(deliveries.c.channel, conversions.c.channel)
    key, needs_contacts = group_key(by, now, q.segments, channel=channel)
    if by == "slot":
        key = func.coalesce(deliveries.c.slot, conversions.c.slot, NO_GROUP)
    elif by not in (None, "channel"):
        key = case((deliveries.c.id.is_(None), literal(NO_GROUP)), else_=key)
    source = conversions.outerjoin(deliveries, conversions.c.delivery_id == deliveries.c.id)
    if needs_contacts:
        source = source.outerjoin(contacts, contacts.c.id == deliveries.c.contact_id)
    c = conversions.c
    order = conversions.alias("ordered")

    def of_order(column: Any) -> Any:
        own = and_(order.c.kind == "order", order.c.order_id == c.order_id, order.c.refund == false())
        return select(column).where(own).limit(1).scalar_subquery()

    # a refund with neither a margin nor a category takes both from its order
    inherit = and_(c.refund == true(), c.margin.is_(None), c.category.is_(None))
    own_margin = case((inherit, of_order(order.c.margin)), else_=c.margin)
    category = case((inherit, of_order(order.c.category)), else_=c.category)
    margins = sorted(q.costs.category_margins.items())
    category_margin = (
        case(*((category == name, literal(m, Numeric(5, 4))) for name, m in margins)) if margins else null()
    )
    fallback = q.costs.margin if q.costs.margin is not None else Decimal(1)
    margin = func.coalesce(own_margin, category_margin, literal(fallback, Numeric(5, 4)))
    basis = case(
        (own_margin.isnot(None), 1),
        (category_margin.isnot(None), 4),
        else_=2 if q.costs.margin is not None else 3,
    )
    mismatch = and_(conversions.c.currency.isnot(None), conversions.c.currency != q.costs.currency)
    inner = (
        select(
            key.label("g"),
            c.kind,
            c.order_id,
            c.contact_id,
            c.refund,
            c.units,
            c.revenue,
            c.discount,
            (c.revenue * margin).label("profit"),
            basis.label("basis"),
            case((mismatch, 1), else_=0).label("mismatch"),
        )
        .select_from(source)
        .where(conversions.c.campaign_id == q.campaign_id, conversions.c.attributed_by.in_(REVENUE_ATTRIBUTIONS))
        .subquery()
    )
    signup = inner.c.kind == "signup"
    kept = and_(inner.c.mismatch == 0, inner.c.kind == "order")
    sold, refund = and_(kept, inner.c.refund == false()), and_(kept, inner.c.refund == true())
    zero = literal(0, Integer)

    def when(condition: Any, column: Any) -> Any:
        return case((condition, column), else_=zero)

    stmt = select(
        inner.c.g,
        _count_if(sold),
        _count_if(refund),
        _unique_if(sold, inner.c.contact_id),
        _unique_if(and_(sold, inner.c.contact_id.is_(None)), inner.c.order_id),
        func.coalesce(func.sum(when(sold, inner.c.units)), 0),
        func.coalesce(func.sum(when(refund, inner.c.units)), 0),
        _sum_scaled(when(sold, inner.c.revenue), 100),
        _sum_scaled(when(refund, inner.c.revenue), 100),
        _sum_scaled(when(sold, inner.c.discount), 100),
        _sum_scaled(when(refund, inner.c.discount), 100),
        _sum_scaled(when(sold, inner.c.profit), 10**6),
        _sum_scaled(when(refund, inner.c.profit), 10**6),
        _count_if(and_(kept, inner.c.basis == 1)),
        _count_if(and_(kept, inner.c.basis == 2)),
        _count_if(and_(kept, inner.c.basis == 3)),
        _count_if(and_(kept, inner.c.basis == 4)),
        _count_if(and_(inner.c.mismatch == 1, inner.c.kind == "order")),
        _count_if(signup),
    ).group_by(inner.c.g)
    out = {}
    for row in await conn.execute(stmt):
        g, orders, refund_rows, buyers, anonymous, units, units_back, *sums = row
        revenue, refunds, discount, discount_back, profit, profit_back, own, campaign, full, *rest = sums
        by_category, mismatches, signups = rest
        out[g] = roi.Totals(
            orders=orders,
            refund_rows=refund_rows,
            purchasers=buyers + anonymous,  # an order without a known contact is its own purchaser
            units=int(units),
            units_refunded=int(units_back),
            revenue=_unscale(revenue, 100),
            refunds=_unscale(refunds, 100),
            discount=_unscale(discount, 100),
            discount_refunded=_unscale(discount_back, 100),
            profit=_unscale(profit, 10**6),
            profit_refunded=_unscale(profit_back, 10**6),
            by_own_margin=own,
            by_category_margin=by_category,
            by_campaign_margin=campaign,
            at_full_margin=full,
            currency_mismatches=mismatches,
            signups=signups,
        )
    return out


async def _holdout(conn: AsyncConnection, q: ReportQuery, by: str | None, now: datetime) -> dict[str, roi.LiftCounts]:
    """Per group, distinct contacts sent to and held out, with the orders (any attribution, in the
    campaign's currency) each placed inside the window: who bought, and their net revenue."""
    key, needs_contacts = group_key(by, now, q.segments)
    start, end = q.window or (now, now)
    signed = case((conversions.c.refund == true(), -conversions.c.revenue), else_=conversions.c.revenue)
    spent = (
        select(
            conversions.c.contact_id,
            _sum_scaled(signed, 100).label("net"),
            func.max(case((conversions.c.refund == false(), 1), else_=0)).label("bought"),
        )
        .where(
            conversions.c.contact_id.isnot(None),
            conversions.c.kind == "order",
            conversions.c.occurred_at >= start,
            conversions.c.occurred_at < end,
            or_(conversions.c.currency.is_(None), conversions.c.currency == q.costs.currency),
        )
        .group_by(conversions.c.contact_id)
        .subquery()
    )
    treated = deliveries.c.state.in_(TREATED_STATES)
    held = and_(deliveries.c.state == S.SKIPPED, deliveries.c.skip_reason == HOLDOUT_REASON)
    arms = (
        select(key.label("g"), deliveries.c.contact_id, case((treated, 1), else_=2).label("arm"))
        .select_from(_from_deliveries(needs_contacts))
        .where(deliveries.c.campaign_id == q.campaign_id, or_(treated, held))
        .distinct()
        .subquery()
    )
    a, b = arms.c.arm, spent.c.bought == 1
    net = func.coalesce(spent.c.net, 0)
    stmt = (
        select(
            arms.c.g,
            _count_if(a == 1),
            _count_if(and_(a == 1, b)),
            func.coalesce(func.sum(case((a == 1, net), else_=0)), 0),
            _count_if(a == 2),
            _count_if(and_(a == 2, b)),
            func.coalesce(func.sum(case((a == 2, net), else_=0)), 0),
        )
        .select_from(arms.outerjoin(spent, spent.c.contact_id == arms.c.contact_id))
        .group_by(arms.c.g)
    )
    return {
        g: roi.LiftCounts(t, tb, _unscale(tn, 100), h, hb, _unscale(hn, 100))
        for g, t, tb, tn, h, hb, hn in await conn.execute(stmt)
    }


def bucket_case(seconds: ColumnElement[float]) -> ColumnElement[int]:
    """Index into ``BUCKET_EDGES`` (anything below the second edge, negatives included, is 0)."""
    whens = [(seconds < edge * 60, literal(i, Integer)) for i, edge in enumerate(BUCKET_EDGES[1:])]
    return case(*whens, else_=literal(len(BUCKET_EDGES) - 1, Integer))


async def _timing(conn: AsyncConnection, campaign_id: str) -> list[TimingBucket]:
    human = or_(events.c.label.is_(None), events.c.label == "human")
    inner = (
        select(
            deliveries.c.slot,
            events.c.kind,
            bucket_case(seconds_between(events.c.occurred_at, HANDED_OVER)).label("bucket"),
        )
        .select_from(deliveries.join(events, events.c.delivery_id == deliveries.c.id))
        .where(deliveries.c.campaign_id == campaign_id, events.c.kind.in_(("open", "click")), human)
        .subquery()
    )
    stmt = select(inner.c.slot, inner.c.bucket, _count_if(inner.c.kind == "open"), _count_if(inner.c.kind == "click"))
    stmt = stmt.group_by(inner.c.slot, inner.c.bucket)
    found = {(slot, bucket): (o, c) for slot, bucket, o, c in await conn.execute(stmt)}
    planned = select(deliveries.c.slot).where(deliveries.c.campaign_id == campaign_id).distinct()
    slots = sorted({slot for slot, _ in found} | set((await conn.execute(planned)).scalars()))
    buckets = []
    for slot in slots:
        for i, low in enumerate(BUCKET_EDGES):
            high = BUCKET_EDGES[i + 1] if i + 1 < len(BUCKET_EDGES) else None
            o, c = found.get((slot, i), (0, 0))
            buckets.append(TimingBucket(slot, low, high, o, c))
    return buckets
