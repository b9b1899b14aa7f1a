"""The per-group facts of a campaign's ROI: conversions, messages handed over and the lift counts,
in total and by channel, slot or zone (SQLite and PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal as D

from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.attribution.facts import conversion_facts
from daemon.attribution.record import record_conversions

from .seed import KEYRING, LOADED, MOM, NOW, ORDERS, seed


async def test_conversion_facts_total_and_lift(engine: AsyncEngine) -> None:
    await seed(engine)
    await record_conversions(engine, ORDERS, NOW, campaigns=LOADED, keyring=KEYRING)
    facts = await conversion_facts(engine, MOM)
    assert facts.currency == "USD" and facts.currency_mismatches == 1
    assert {(line.order_id, line.refund) for line in facts.lines} == {
        ("A1", False),
        ("A1", True),
        ("A2", False),
        ("A6", False),
    }
    total = facts.total
    assert total.sent == {"email": 3, "sms": 1}
    t = total.totals
    # A1 100 (margin 0.4 → 40) + A2 50 (own 0.6 → 30) - refund of A1 (40); A6 is in EUR
    assert (t.orders, t.refund_rows, t.purchasers, t.net_units) == (2, 1, 2, 1)
    assert (t.revenue, t.refunds, t.net_revenue, t.discount_cost, t.gross_profit) == (
        D("150.00"),
        D("100.00"),
        D("50.00"),
        D("0.00"),
        D("30.000"),
    )
    # treated: contacts 1, 2, 5 all bought (A3 of another campaign counts too); holdout: 3 of 3, 4
    lift = total.lift
    assert (lift.treated_contacts, lift.treated_purchasers, lift.holdout_contacts, lift.holdout_purchasers) == (
        3,
        3,
        2,
        1,
    )
    assert lift.treated_revenue == D("95.00")  # c1 100 - 100 (A6 in EUR left out), c2 50 + 25, c5 20
    assert lift.holdout_revenue == D("40.00")
    figures = facts.figures(MOM.costs)["all"]
    assert figures.send_cost == D("0.06")  # 3 × 0.002 + 1 × 0.05 = 0.056
    assert figures.roi == D("534.7143")  # (30 - 0.056) / 0.056
    assert figures.lift is not None and figures.lift.relative == D("1.0000")  # 1 / 0.5 - 1
    assert figures.lift.incremental_revenue == D("35.00")  # (95/3 - 40/2) × 3


async def test_conversion_facts_by_channel_and_zone(engine: AsyncEngine) -> None:
    await seed(engine)
    await record_conversions(engine, ORDERS, NOW, campaigns=LOADED, keyring=KEYRING)
    facts = await conversion_facts(engine, MOM, by="channel")
    assert set(facts.groups) == {"email", "sms"}
    email, sms = facts.groups["email"], facts.groups["sms"]
    assert email.sent == {"email": 3} and sms.sent == {"sms": 1}
    assert (email.totals.orders, email.totals.net_revenue) == (1, D("50.00"))
    assert (sms.totals.orders, sms.totals.refund_rows, sms.totals.net_revenue) == (1, 1, D("0.00"))
    assert (email.lift.treated_contacts, email.lift.holdout_contacts, email.lift.holdout_purchasers) == (3, 2, 1)
    assert (sms.lift.treated_contacts, sms.lift.treated_purchasers, sms.lift.holdout_contacts) == (1, 1, 0)
    assert facts.total.totals.gross_profit == D("30.000")
    zones = await conversion_facts(engine, MOM, by="timezone")
    assert zones.groups["Asia/Shanghai"].totals.orders == 1 and zones.groups["Europe/London"].totals.orders == 1
    assert zones.groups["America/New_York"].sent == {"email": 1}


async def test_a_campaign_without_conversions(engine: AsyncEngine) -> None:
    facts = await conversion_facts(engine, MOM, by="slot")
    assert facts.groups == {} and facts.total.totals.orders == 0 and facts.total.lift.treated_contacts == 0
    assert facts.figures(MOM.costs)["all"].roi is None
