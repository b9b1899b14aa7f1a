"""Recording conversions with their attribution: coupon, click and contact credit, duplicates and
refunds (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.record import record_conversions

from .seed import (
    CLICK_D3,
    DAD_ID,
    KEYRING,
    LOADED,
    MOM,
    NOW,
    ORDERS,
    credit,
    mom_code,
    order,
    seed,
    signup,
    stored,
    typed,
)


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


async def test_signups_are_credited_like_orders_and_kept_apart_from_them(engine: AsyncEngine) -> None:
    await seed(engine)
    await record_conversions(engine, ORDERS[:2], NOW, campaigns=LOADED, keyring=KEYRING)
    signups = [
        signup("A1", timedelta(hours=3), coupon_code=typed(mom_code(1))),  # the same id as an order: its own row
        signup("U2", timedelta(days=1), click_id=CLICK_D3),
        signup("U3", timedelta(hours=1)),
    ]
    result = await record_conversions(engine, signups, NOW, campaigns=LOADED, keyring=KEYRING)
    assert (result.recorded, result.duplicates) == (3, 0)
    again = await record_conversions(engine, signups[:1], NOW, campaigns=LOADED, keyring=KEYRING)
    assert (again.recorded, again.duplicates) == (0, 1)
    rows = await stored(engine)
    assert credit(rows[("A1", "signup")]) == credit(rows[("A1", False)])  # the coupon credits both the same way
    assert credit(rows[("U2", "signup")]) == ("click", MOM.id, 3, "email", "17:00", 2)
    assert rows[("U3", "signup")]["attributed_by"] == "none"
    assert rows[("U2", "signup")]["revenue"] == 0 and rows[("A1", False)]["revenue"] == D("100.00")
