"""Registered users (signups credited like orders) and per-category margins in the report, on SQLite
and PostgreSQL; the SQL sums are checked against the pure ``roi.totals`` over the same rows."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from reporting.seed import CAMPAIGN, COSTS, NAME, T0, WINDOW, seed
from topslot.attribution import roi
from topslot.attribution.rules import REVENUE_ATTRIBUTIONS
from topslot.reporting.data import ReportQuery, build_report
from topslot.store.schema import conversions

D = Decimal
CATEGORY_COSTS = COSTS.model_copy(update={"category_margins": {"shoes": D("0.25"), "bags": D("0.60")}})
# (order, refund, delivery, contact, revenue, margin, category) on email deliveries d2 and d5
MORE_ORDERS = [
    ("k1", False, 2, 2, "80.00", None, "shoes"),  # its category's margin 25 %
    ("k1", True, 2, 2, "20.00", None, None),  # a refund takes its order's category
    ("k2", False, 5, 5, "10.00", "0.9000", "bags"),  # its own margin comes first
    ("k3", False, 5, 5, "10.00", None, "hats"),  # a category not listed: costs.margin (40 %)
]


async def _seed_more(engine: AsyncEngine) -> None:
    await seed(engine)
    at = T0 + timedelta(days=1)
    async with engine.begin() as conn:
        await conn.execute(
            insert(conversions),
            [
                {"order_id": order, "refund": refund, "campaign_id": CAMPAIGN, "delivery_id": d, "contact_id": contact,
                 "channel": "email", "slot": "07:30", "attributed_by": "coupon", "revenue": D(revenue),
                 "margin": D(margin) if margin else None, "category": category, "currency": "USD",
                 "occurred_at": at, "received_at": at}
                for order, refund, d, contact, revenue, margin, category in MORE_ORDERS
            ],
        )  # fmt: skip


async def test_registered_users_are_counted_per_group(engine: AsyncEngine) -> None:
    await seed(engine)
    report = await build_report(engine, ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=COSTS), T0, name=NAME)
    email, sms = report.groups
    # u1 and o2 on email, u3 on sms; u9 (credited by contact only) and the order o2 are not signups credited
    assert (report.total.money.signups, email.money.signups, sms.money.signups) == (3, 2, 1)
    assert report.total.money.orders == 3  # the signup "o2" is no order: orders and revenue unchanged
    assert report.total.money.revenue == D("180.00")


async def test_category_margins_come_between_the_orders_own_and_the_campaigns(engine: AsyncEngine) -> None:
    await _seed_more(engine)
    query = ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=CATEGORY_COSTS)
    report = await build_report(engine, query, T0, name=NAME)
    m = report.total.money
    # 61.00 from the seed + (80 − 20) × 0.25 + 10 × 0.9 + 10 × 0.40
    assert m.gross_profit == D("89.00") and m.margin_basis == "mixed"
    without = await build_report(engine, ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=COSTS), T0, name=NAME)
    assert without.total.money.gross_profit == D("98.00")  # 61 + (80 − 20) × 0.40 + 10 × 0.9 + 10 × 0.40
    lines = await _credited_lines(engine)
    oracle = roi.totals(
        lines, currency="USD", default_margin=COSTS.margin, category_margins=CATEGORY_COSTS.category_margins
    )
    assert (m.gross_profit, m.signups, m.orders) == (roi.money(oracle.gross_profit), oracle.signups, oracle.orders)


async def _credited_lines(engine: AsyncEngine) -> list[roi.ConversionLine]:
    query = select(conversions).where(
        conversions.c.campaign_id == CAMPAIGN, conversions.c.attributed_by.in_(REVENUE_ATTRIBUTIONS)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        roi.ConversionLine(
            r.order_id, bool(r.refund), r.revenue, r.discount, r.units, r.margin, r.currency, r.contact_id,
            kind=r.kind, category=r.category,
        )
        for r in rows
    ]  # fmt: skip
