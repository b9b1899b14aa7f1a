"""Report figures from a seeded ledger, events and conversions, on SQLite and PostgreSQL; every
expected number is worked out by hand from ``reporting.seed`` (see its table)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from reporting.seed import CAMPAIGN, COSTS, NAME, T0, WINDOW, seed
from topslot.attribution.roi import LiftCounts, ratio
from topslot.reporting.data import ReportQuery, build_report, ledger_window
from topslot.reporting.model import NO_GROUP, DeliveryCounts, Engagement, Report
from topslot.reporting.segments import parse_segments

D = Decimal


async def _report(engine: AsyncEngine, by: str, **kw: object) -> Report:
    await seed(engine)
    query = ReportQuery(CAMPAIGN, by, window=WINDOW, costs=COSTS, **kw)  # type: ignore[arg-type]
    return await build_report(engine, query, T0, name=NAME, charts=True)


async def test_campaign_total(engine: AsyncEngine) -> None:
    report = await _report(engine, "channel")
    t = report.total
    assert t.deliveries == DeliveryCounts(
        planned=11, pending=1, sent=5, accepted=4, delivered=1, bounced=1, failed=1, unknown=1,
        skipped={"holdout": 2, "no_consent": 1}, chargeable_by_channel={"email": 5, "sms": 1},
    )  # fmt: skip
    # human opens: d1 ×2, d5 ×2 (one unlabelled), d7; opened people: d1, d3 (clicked), d5, d7
    assert t.opens == Engagement(human_unique=4, human_total=5, machine_unique=2, machine_total=2)
    assert t.clicks == Engagement(human_unique=2, human_total=2, machine_unique=1, machine_total=1)
    assert t.unsubscribes == 1
    assert (t.ctr, t.click_to_open) == (D("0.5000"), D("0.5000"))  # 2 / 4 accepted, 2 / 4 opened
    m = t.money
    # o1 o2 o3 (o8 is in EUR: left out and counted); units 2 + 1 + 1 − 1 refunded
    assert (m.purchasers, m.orders, m.refund_rows, m.units, m.currency_mismatches) == (3, 3, 1, 3, 1)
    assert (m.revenue, m.refunds, m.net_revenue, m.discount_cost) == (D("180.00"), D("40.00"), D("140.00"), D("15.00"))
    assert m.send_cost == D("1.00")  # 5 email × 0.10 + 1 sms × 0.50
    assert m.gross_profit == D("61.00")  # o2 50 × 0.5 (its own margin) + (100 − 40 + 30) × 0.40
    # promotion cost = discount 15 + send 1 (no fixed cost); ROI = (61 − 16) / 16
    assert (m.promotion_cost, m.fixed_cost, m.net_profit) == (D("16.00"), D("0.00"), D("45.00"))
    assert (m.margin_basis, m.roi) == ("mixed", D("2.8125"))
    assert m.margin_pct == D("0.4357")  # 61 / 140
    # treated c1 c2 c3 c4 c5 c7, of whom c1 c2 c3 c5 bought; held out c9 (bought) and c10 (too late)
    # net revenue in the window, any attribution: c1 100 − 40 + 70, c2 15, c3 50, c5 30 | c9 20
    assert m.lift is not None and m.lift.counts == LiftCounts(6, 4, D("225.00"), 2, 1, D("20.00"))
    assert (m.lift.treated_rate, m.lift.holdout_rate, m.lift.relative) == (D("0.666667"), D("0.500000"), D("0.3333"))
    assert (m.lift.incremental_purchasers, m.lift.incremental_revenue) == (D("1.00"), D("165.00"))  # (37.5 − 10) × 6
    assert m.incremental_roi == ratio((D("165.00") * D("0.4357") - 16) / 16)  # incremental gross profit vs cost
    assert report.campaign_name == NAME and report.window == WINDOW


async def test_by_channel(engine: AsyncEngine) -> None:
    report = await _report(engine, "channel")
    email, sms = report.groups
    assert (email.key, sms.key) == ("email", "sms")
    assert email.deliveries == DeliveryCounts(
        planned=7, pending=1, sent=4, accepted=3, delivered=1, bounced=1, failed=0, unknown=1,
        skipped={"holdout": 1}, chargeable_by_channel={"email": 5},
    )  # fmt: skip
    assert sms.deliveries == DeliveryCounts(
        planned=4,
        sent=1,
        accepted=1,
        failed=1,
        skipped={"holdout": 1, "no_consent": 1},
        chargeable_by_channel={"sms": 1},
    )
    assert email.opens == Engagement(3, 5, 2, 2) and email.clicks == Engagement(1, 1, 1, 1)
    assert sms.opens == Engagement(1, 0, 0, 0) and sms.clicks == Engagement(1, 1, 0, 0)
    assert (email.ctr, email.click_to_open, sms.ctr, sms.click_to_open) == (D("0.3333"), D("0.3333"), D("1"), D("1"))
    assert (email.unsubscribes, sms.unsubscribes) == (1, 0)
    e, s = email.money, sms.money
    assert (e.purchasers, e.orders, e.units) == (2, 2, 2)
    assert (e.revenue, e.refunds, e.net_revenue, e.discount_cost) == (D("130.00"), D("40.00"), D("90.00"), D("15.00"))
    assert (e.send_cost, e.gross_profit, e.margin_basis) == (D("0.50"), D("36.00"), "campaign")
    assert e.promotion_cost == D("15.50") and e.roi == ratio((D("36.00") - D("15.50")) / D("15.50"))
    assert (s.send_cost, s.gross_profit, s.margin_basis) == (D("0.50"), D("25.00"), "conversion")
    assert s.promotion_cost == s.discount_cost + s.send_cost  # a part of the campaign carries no fixed cost
    assert s.roi == ratio((s.gross_profit - s.promotion_cost) / s.promotion_cost)
    assert e.lift is not None and s.lift is not None
    assert e.lift.counts == LiftCounts(5, 3, D("175.00"), 1, 1, D("20.00"))  # c1 130, c2 15, c5 30 | c9 20
    assert (e.lift.relative, e.lift.incremental_purchasers) == (D("-0.4000"), D("-2.00"))  # 0.6 vs 1.0
    assert s.lift.counts == LiftCounts(1, 1, D("50.00"), 1, 0, D("0"))
    assert (s.lift.relative, s.lift.incremental_purchasers) == (None, D("1.00"))  # nobody held out bought
    assert [g.key for g in report.roi_by_channel] == ["email", "sms"]


async def test_by_slot_and_timing(engine: AsyncEngine) -> None:
    report = await _report(engine, "slot")
    morning, evening = report.groups
    assert (morning.key, morning.deliveries.planned, evening.key, evening.deliveries.planned) == (
        "07:30",
        6,
        "17:00",
        5,
    )
    assert morning.money.revenue == D("130.00") and evening.money.revenue == D("50.00")  # o1 + o3 | o2
    assert morning.opens.human_unique == 2 and evening.opens.human_unique == 2  # d1 d5 | d3 d7
    timing = {(b.slot, b.label): (b.opens, b.clicks) for b in report.timing if b.opens or b.clicks}
    assert timing == {
        ("07:30", "0m–5m"): (2, 0),
        ("07:30", "5m–10m"): (1, 0),
        ("07:30", "15m–30m"): (1, 1),
        ("17:00", "30m–1h"): (1, 0),  # exactly 30 minutes: the upper bucket on both engines
        ("17:00", "1h–2h"): (0, 1),
    }
    assert {b.slot for b in report.timing} == {"07:30", "17:00"} and len(report.timing) == 20


async def test_by_country_segment_and_timezone(engine: AsyncEngine) -> None:
    report = await _report(engine, "segment")
    planned = {g.key: g.deliveries.planned for g in report.groups}
    assert planned == {"CN": 3, "DE": 2, "US": 5, NO_GROUP: 1}
    assert [g.key for g in report.groups][-1] == NO_GROUP  # missing keys sort last
    revenue = {g.key: g.money.revenue for g in report.groups}
    assert revenue == {"CN": D("30.00"), "DE": D("0.00"), "US": D("150.00"), NO_GROUP: D("0.00")}
    by_zone = await build_report(engine, ReportQuery(CAMPAIGN, "timezone", window=WINDOW, costs=COSTS), T0)
    assert {g.key: g.deliveries.planned for g in by_zone.groups} == {
        "America/Chicago": 1, "America/New_York": 4, "Asia/Shanghai": 4, "Europe/Berlin": 2
    }  # fmt: skip


async def test_named_segments_first_match(engine: AsyncEngine) -> None:
    named = parse_segments({"china": {"attribute": "country", "equals": "CN"}, "vip": {"tag": "vip"}})
    report = await _report(engine, "segment", segments=named)
    groups = {g.key: g for g in report.groups}
    # c5 is vip but China comes first; c1 (vip) has d1 and d11
    assert {k: g.deliveries.planned for k, g in groups.items()} == {"china": 3, "vip": 2, "other": 6}
    assert groups["vip"].money.revenue == D("100.00") and groups["china"].money.revenue == D("30.00")
    assert report.total.deliveries.planned == 11


async def test_without_a_margin_gross_profit_is_unknown(engine: AsyncEngine) -> None:
    await seed(engine)
    no_margin = COSTS.model_copy(update={"margin": None})
    report = await build_report(engine, ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=no_margin), T0)
    email, sms = report.groups
    assert (email.money.gross_profit, email.money.roi, email.money.margin_basis) == (None, None, "unknown")
    assert report.total.money.gross_profit is None and report.total.money.margin_basis == "mixed"
    s = sms.money  # o2 has its own margin
    assert s.gross_profit == D("25.00") and s.roi == ratio((s.gross_profit - s.promotion_cost) / s.promotion_cost)


async def test_the_fixed_cost_is_in_the_total_only(engine: AsyncEngine) -> None:
    plain = await _report(engine, "channel")  # seeds
    fixed = COSTS.model_copy(update={"fixed": D("20")})
    report = await build_report(engine, ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=fixed), T0)
    t, before = report.total.money, plain.total.money
    assert t.fixed_cost == D("20.00") and t.promotion_cost == before.promotion_cost + 20
    assert t.gross_profit is not None and t.roi == ratio((t.gross_profit - t.promotion_cost) / t.promotion_cost)
    assert [g.money for g in report.groups] == [g.money for g in plain.groups]  # the parts carry none of it


async def test_empty_campaign_and_ledger_window(engine: AsyncEngine) -> None:
    await seed(engine)
    report = await build_report(engine, ReportQuery("nothing", "channel"), T0)
    assert report.groups == [] and report.total.deliveries.planned == 0 and report.total.money.roi is None
    window = await ledger_window(engine, CAMPAIGN)
    assert window is not None
    assert [w.isoformat() for w in window] == ["2027-05-06T11:30:00+00:00", "2027-05-13T21:00:00+00:00"]


def test_unknown_dimension_is_refused() -> None:
    from topslot.reporting.groups import group_key

    with pytest.raises(ValueError, match="--by must be one of"):
        group_key("country", T0)


async def test_sql_sums_agree_with_roi_totals(engine: AsyncEngine) -> None:
    """The grouped SQL reproduces ``roi.totals`` (the per-row reference) for every channel."""
    from reporting.seed import CURRENCY, ORDERS, ROWS, SIGNUPS
    from topslot.attribution.roi import ConversionLine, roi_figures, totals

    report = await _report(engine, "channel")
    for group in report.groups:
        lines = [
            ConversionLine(order, refund, D(revenue), D(discount), units, D(margin) if margin else None,
                           CURRENCY.get(order, "USD"), contact, by)
            for order, refund, camp, d, contact, by, revenue, discount, units, margin, _ in ORDERS
            if camp == CAMPAIGN and by in ("coupon", "click") and d and ROWS[d][2] == group.key
        ] + [
            ConversionLine(user, False, D(0), contact_id=contact, attributed_by=by, kind="signup")
            for user, camp, d, contact, by in SIGNUPS
            if camp == CAMPAIGN and by in ("coupon", "click") and ROWS[d][2] == group.key
        ]  # fmt: skip
        reference = roi_figures(
            group.key, totals(lines, currency="USD", default_margin=COSTS.margin),
            group.deliveries.chargeable_by_channel, COSTS, group.money.lift.counts if group.money.lift else None,
        )  # fmt: skip
        assert group.money == reference


async def test_outbox_writes_are_not_paid_and_sms_pay_per_segment(engine: AsyncEngine) -> None:
    from sqlalchemy import update

    from topslot.store.schema import deliveries

    await seed(engine)
    async with engine.begin() as conn:  # d2 (email, sent) went to the file outbox; d3 (sms) was 2 segments
        await conn.execute(update(deliveries).where(deliveries.c.id == 2).values(provider="outbox"))
        await conn.execute(update(deliveries).where(deliveries.c.id == 3).values(provider="twilio", segments=2))
    query = ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=COSTS)
    t = (await build_report(engine, query, T0, name=NAME)).total

    assert (t.deliveries.sent, t.deliveries.outbox) == (5, 1)  # still handed over, but labelled
    assert t.deliveries.chargeable_by_channel == {"email": 4, "sms": 2}
    assert t.money.send_cost == D("1.40")  # 4 email × 0.10 + 2 segments × 0.50
