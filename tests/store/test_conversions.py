"""The store's conversion queries: the look-ups attribution makes for a batch and inserting
conversions once (SQLite and PostgreSQL). What they mean for attribution is tested in
``tests/attribution`` (``test_record``)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D
from typing import Any

from attribution.seed import DAD_ID, MOM, SENT, mom_code, seed
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.coupons.codes import canonical
from topslot.store import conversions as store
from topslot.store.conversions import HandedOutCode, LedgerRow, StoredClick, StoredCredit
from topslot.store.schema import coupon_codes, events


def conversion(order_id: str, revenue: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "order_id": order_id,
        "refund": False,
        "coupon_code": None,
        "click_id": None,
        "contact_ref": None,
        "contact_id": None,
        "campaign_id": None,
        "delivery_id": None,
        "channel": None,
        "slot": None,
        "attributed_by": "none",
        "revenue": D(revenue),
        "discount": D(0),
        "units": 0,
        "currency": None,
        "margin": None,
        "source": "webhook",
        "occurred_at": SENT + timedelta(days=1),
        "received_at": SENT + timedelta(days=2),
    }
    row.update(kw)
    return row


BY_COUPON = {"attributed_by": "coupon", "campaign_id": MOM.id, "delivery_id": 2, "channel": "sms", "slot": "07:30"}
ROWS = [
    conversion("A1", "100.00", contact_id=1, coupon_code=mom_code(1), discount=D("10.00"), units=2, **BY_COUPON),
    conversion("A1", "100.00", refund=True, contact_id=1, coupon_code=mom_code(1), units=2, **BY_COUPON),
    conversion(
        "A2",
        "50.00",
        attributed_by="click",
        campaign_id=MOM.id,
        delivery_id=3,
        channel="email",
        slot="17:00",
        contact_id=2,
        margin=D("0.6"),
    ),
    conversion("A3", "40.00", attributed_by="contact", campaign_id=MOM.id, delivery_id=4, contact_id=3),
    conversion("A4", "30.00", attributed_by="coupon", campaign_id=MOM.id, contact_id=1, currency="EUR"),
    conversion("A5", "20.00", contact_id=4, occurred_at=SENT + timedelta(days=30)),  # a month later
]


async def test_inserting_skips_stored_orders_and_credits_are_read_back(engine: AsyncEngine) -> None:
    await seed(engine)
    async with engine.begin() as conn:
        assert await store.insert_conversions(conn, ROWS[:3]) == ["coupon", "coupon", "click"]
        assert await store.insert_conversions(conn, [ROWS[0], conversion("B1", "1.00")]) == ["none"]
        assert await store.insert_conversions(conn, []) == []
        assert await store.stored_keys(conn, ["A1", "A2", "A9"]) == {("order", "A1", False), ("order", "A1", True), ("order", "A2", False)}
        credits = await store.order_credits(conn, ["A1", "A2", "A9"])
    assert credits == {
        "A1": StoredCredit("coupon", MOM.id, 2, "sms", "07:30", 1, mom_code(1)),
        "A2": StoredCredit("click", MOM.id, 3, "email", "17:00", 2, None),
    }


async def test_handed_out_codes_by_spelling_and_by_canonical_form(engine: AsyncEngine) -> None:
    await seed(engine)  # DAD-0042 assigned to c2 in pool fd
    async with engine.begin() as conn:
        await conn.execute(
            insert(coupon_codes),
            [
                {"pool": "k1", "code": "KID-0001", "campaign_id": DAD_ID, "contact_id": 3, "state": "reserved"},
                {"pool": "k2", "code": "kid0001", "campaign_id": MOM.id, "contact_id": 4, "state": "assigned"},
                {"pool": "k1", "code": "KID-0002", "campaign_id": None, "contact_id": None, "state": "available"},
                {"pool": "gen:" + MOM.id, "code": "MOM-1", "campaign_id": MOM.id, "contact_id": 5, "state": "reserved"},
            ],
        )
        exact = await store.handed_out_codes(conn, ["DAD-0042", "dad-0042", "KID-0002", "MOM-1"])
        assert await store.handed_out_codes(conn, []) == {}
        k1d = canonical("kid-0001")
        assert k1d == "K1D0001"  # I → 1
        fuzzy = await store.handed_out_by_canonical(conn, [k1d, canonical("KID-0002"), "DAD0042"], ["k1", "k2"])
        elsewhere = await store.handed_out_by_canonical(conn, ["DAD0042"], ["fd"])
        assert await store.handed_out_by_canonical(conn, ["DAD0042"], []) == {}
    assert exact == {
        "DAD-0042": HandedOutCode("DAD-0042", DAD_ID, 2, generated=False),
        "MOM-1": HandedOutCode("MOM-1", MOM.id, 5, generated=True),
    }  # an available code belongs to nobody
    assert fuzzy == {k1d: HandedOutCode("kid0001", MOM.id, 4, generated=False)}  # assigned beats reserved
    assert elsewhere == {"DAD0042": HandedOutCode("DAD-0042", DAD_ID, 2, generated=False)}


async def test_contacts_ledger_rows_and_clicks(engine: AsyncEngine) -> None:
    await seed(engine)
    async with engine.begin() as conn:
        await conn.execute(
            insert(events).values(delivery_id=3, kind="click", occurred_at=SENT + timedelta(hours=12), label="scanner")
        )
        await conn.execute(insert(events).values(delivery_id=1, kind="open", occurred_at=SENT, label="human"))
        assert await store.contact_ids(conn, ["c1", "c5", "nobody", None]) == {"c1": 1, "c5": 5}
        rows = await store.ledger_rows(conn, [3, 8, 99])
        pairs = await store.handed_over_rows(conn, {(MOM.id, 1), (DAD_ID, 2)})
        people = await store.handed_over_or_held_rows(conn, [3, 5, 2], holdout_reason="holdout")
        found = await store.clicks(conn, [3, 1])
    assert set(rows) == {3, 8}  # any state; unknown ids left out
    handed = SENT + timedelta(hours=10)
    assert rows[3] == LedgerRow(3, MOM.id, 2, "email", "17:00", "delivered", None, mom_code(2), SENT, handed)
    assert rows[8].skip_reason == "no_consent"
    # handed-over rows of each pair only: not MOM's rows of contact 2, though both ids were asked for
    assert {k: sorted(r.id for r in v) for k, v in pairs.items()} == {(MOM.id, 1): [1, 2], (DAD_ID, 2): [7]}
    # sent or held out, any campaign; d8 (skipped, no consent) left out
    assert {k: sorted(r.id for r in v) for k, v in people.items()} == {2: [3, 7], 3: [4], 5: [6]}
    assert sorted((c.delivery_id, c.label) for c in found) == [(3, "human"), (3, "scanner")]
    assert all(isinstance(c, StoredClick) for c in found)
