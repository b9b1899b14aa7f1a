"""Recording conversions with their attribution, and the per-group facts of a campaign's ROI
(SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from attribution.support import make_campaign
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.attribution.inputs import ConversionInput
from daemon.coupons.codes import GeneratedScheme
from daemon.coupons.keys import active_coupon_key
from daemon.links import tokens
from daemon.links.keys import Keyring
from daemon.store.conversions import conversion_facts, record_conversions
from daemon.store.schema import campaigns, contacts, conversions, coupon_codes, deliveries, events

KEYRING = Keyring({"main": b"store-test-signing-key-0123456789"})
MOM = make_campaign()  # generated MOM codes; margin 0.4, email 0.002, sms 0.05
DAD_ID = "fathers-day-2027"
DAD = make_campaign(DAD_ID, coupon={"pool": "fd"})  # pooled codes
LOADED = {MOM.id: MOM, DAD_ID: DAD}
SENT = datetime(2027, 5, 6, 23, 25, tzinfo=UTC)
NOW = datetime(2027, 5, 12, tzinfo=UTC)
LINK = "0123456789abcdef"


def mom_code(contact: int) -> str:
    return GeneratedScheme(active_coupon_key(KEYRING), MOM.id, "MOM", 10).code(contact)


def delivery(id: int, campaign: str, contact: int, channel: str, slot: str, zone: str, state: str, **kw: Any) -> dict:
    row = {
        "id": id,
        "campaign_id": campaign,
        "contact_id": contact,
        "channel": channel,
        "slot_date": date(2027, 5, 7),
        "slot": slot,
        "due_utc": SENT,
        "dispatch_start_utc": SENT,
        "timezone": zone,
        "tz_source": "contact",
        "state": state,
        "skip_reason": None,
        "coupon_code": None,
        "created_at": SENT,
        "updated_at": SENT,
    }
    row.update(kw)
    return row


async def seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(contacts),
            [{"id": i, "external_id": f"c{i}", "created_at": SENT, "updated_at": SENT} for i in range(1, 6)],
        )
        await conn.execute(
            insert(campaigns),
            [
                {"id": MOM.id, "name": "Mom", "config_hash": "h", "loaded_at": SENT},
                {"id": DAD_ID, "name": "Dad", "config_hash": "h", "loaded_at": SENT},
            ],
        )
        sh, ld, ny = "Asia/Shanghai", "Europe/London", "America/New_York"
        await conn.execute(
            insert(deliveries),
            [
                delivery(1, MOM.id, 1, "email", "07:30", sh, "sent", coupon_code=mom_code(1)),
                delivery(
                    2,
                    MOM.id,
                    1,
                    "sms",
                    "07:30",
                    sh,
                    "sent",
                    coupon_code=mom_code(1),
                    updated_at=SENT + timedelta(minutes=1),
                ),
                delivery(
                    3,
                    MOM.id,
                    2,
                    "email",
                    "17:00",
                    ld,
                    "delivered",
                    coupon_code=mom_code(2),
                    updated_at=SENT + timedelta(hours=10),
                ),
                delivery(4, MOM.id, 3, "email", "07:30", sh, "skipped", skip_reason="holdout"),
                delivery(5, MOM.id, 4, "email", "07:30", sh, "skipped", skip_reason="holdout"),
                delivery(6, MOM.id, 5, "email", "07:30", ny, "sent"),
                delivery(7, DAD_ID, 2, "email", "07:30", ld, "sent", coupon_code="DAD-0042"),
                delivery(8, MOM.id, 5, "sms", "07:30", ny, "skipped", skip_reason="no_consent"),
            ],
        )
        await conn.execute(
            insert(coupon_codes).values(
                pool="fd", code="DAD-0042", campaign_id=DAD_ID, contact_id=2, state="assigned", assigned_at=SENT
            )
        )
        await conn.execute(
            insert(events).values(delivery_id=3, kind="click", occurred_at=SENT + timedelta(hours=11), label="human")
        )


def order(order_id: str, revenue: str, at: timedelta, **kw: Any) -> ConversionInput:
    return ConversionInput(order_id, SENT + at, D(revenue), **kw)


def typed(code: str) -> str:
    return (code[:4] + "-" + code[4:]).lower()


def flipped(token: str) -> str:
    return token[:10] + ("A" if token[10] != "A" else "B") + token[11:]


CLICK_D3 = tokens.sign(KEYRING, "click", 3, LINK)
ORDERS = [
    order("A1", "100.00", timedelta(hours=2), coupon_code=typed(mom_code(1)), discount=D("10.00"), units=2),
    order("A2", "50.00", timedelta(days=1), click_id=CLICK_D3, margin=D("0.6"), units=1),
    order("A3", "25.00", timedelta(days=1), coupon_code="dad0o42"),  # pool code, O typed for 0, no dash
    order("A4", "40.00", timedelta(days=2), contact_ref="c3"),  # a holdout contact
    order("A5", "20.00", timedelta(days=2), click_id=flipped(CLICK_D3), contact_ref="c5"),
    order("A6", "30.00", timedelta(days=2), coupon_code=mom_code(1), currency="EUR"),
    order("A1", "100.00", timedelta(days=3), refund=True, discount=D("10.00"), units=2),  # inherits A1's credit
    order("A2", "50.00", timedelta(days=1)),  # a repeat in the same call
    order("A7", "5.00", timedelta(days=1), contact_ref="nobody", coupon_code="SUMMER10"),
]


async def stored(engine: AsyncEngine) -> dict[tuple[str, bool], dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(conversions))
        return {(r.order_id, bool(r.refund)): dict(r._mapping) for r in result}


def credit(row: dict[str, Any]) -> tuple:
    keys = ("attributed_by", "campaign_id", "delivery_id", "channel", "slot", "contact_id")
    return tuple(row[k] for k in keys)


async def test_orders_are_credited_by_coupon_click_and_contact(engine: AsyncEngine) -> None:
    await seed(engine)
    result = await record_conversions(engine, ORDERS, NOW, campaigns=LOADED, keyring=KEYRING)
    assert (result.recorded, result.duplicates, result.currency_mismatches) == (8, 1, 1)
    assert dict(result.attributed) == {"coupon": 4, "click": 1, "contact": 2, "none": 1}
    rows = await stored(engine)
    # both deliveries carried the code; the sms was handed over last before the order
    assert credit(rows[("A1", False)]) == ("coupon", MOM.id, 2, "sms", "07:30", 1)
    assert rows[("A1", False)]["coupon_code"] == mom_code(1)  # the stored form, not the typed one
    assert credit(rows[("A2", False)]) == ("click", MOM.id, 3, "email", "17:00", 2)
    assert rows[("A2", False)]["click_id"] == CLICK_D3 and rows[("A2", False)]["margin"] == D("0.6")
    assert credit(rows[("A3", False)]) == ("coupon", DAD_ID, 7, "email", "07:30", 2)
    assert rows[("A3", False)]["coupon_code"] == "DAD-0042"
    assert credit(rows[("A4", False)]) == ("contact", MOM.id, 4, "email", "07:30", 3)
    assert credit(rows[("A5", False)]) == ("contact", MOM.id, 6, "email", "07:30", 5)  # forged tsid ignored
    assert credit(rows[("A6", False)])[:3] == ("coupon", MOM.id, 2)
    assert credit(rows[("A1", True)]) == credit(rows[("A1", False)])
    assert credit(rows[("A7", False)]) == ("none", None, None, None, None, None)
    assert rows[("A7", False)]["contact_ref"] == "nobody" and rows[("A7", False)]["coupon_code"] == "SUMMER10"
    assert rows[("A2", False)]["revenue"] == D("50.00")  # the first of the repeated order won
    assert all(r["received_at"] == NOW and r["source"] == "webhook" for r in rows.values())


async def test_re_sending_changes_nothing_and_a_later_refund_inherits(engine: AsyncEngine) -> None:
    await seed(engine)
    await record_conversions(engine, ORDERS[:2], NOW, campaigns=LOADED, keyring=KEYRING)
    again = await record_conversions(engine, ORDERS[:2], NOW, campaigns=LOADED, keyring=KEYRING)
    assert (again.recorded, again.duplicates) == (0, 2)
    refund = order("A2", "50.00", timedelta(days=4), refund=True)
    later = await record_conversions(engine, [refund], NOW, campaigns={}, keyring=None, source="import")
    assert later.recorded == 1
    rows = await stored(engine)
    assert credit(rows[("A2", True)]) == ("click", MOM.id, 3, "email", "17:00", 2)
    assert rows[("A2", True)]["source"] == "import"


async def test_click_outside_the_window_and_without_keys(engine: AsyncEngine) -> None:
    await seed(engine)
    late = order("L1", "9.00", timedelta(hours=11, days=7, seconds=1), click_id=CLICK_D3)  # 7 days after the click
    unchecked = order("L2", "9.00", timedelta(days=1), click_id=CLICK_D3)
    await record_conversions(engine, [late], NOW, campaigns=LOADED, keyring=KEYRING)
    await record_conversions(engine, [unchecked], NOW, campaigns=LOADED, keyring=None)
    rows = await stored(engine)
    assert rows[("L1", False)]["attributed_by"] == "contact"  # contact 2 was sent the campaign
    assert rows[("L2", False)]["attributed_by"] == "none"  # nothing verifies the click id


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
