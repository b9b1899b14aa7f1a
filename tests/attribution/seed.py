"""A small world of deliveries, coupon codes and clicks for the conversion tests (attribution and
the store's look-ups), and the orders shops send against it.

Campaigns ``MOM`` (generated codes) and ``DAD`` (pool ``fd``); contacts c1..c5; every row is for
2027-05-07, due and handed over at ``SENT`` unless said otherwise:

    d1  c1 MOM email 07:30 Asia/Shanghai     sent, carrying c1's MOM code
    d2  c1 MOM sms   07:30 Asia/Shanghai     sent, carrying c1's MOM code, handed over a minute later
    d3  c2 MOM email 17:00 Europe/London     delivered, carrying c2's MOM code, handed over 10 h
                                             later; one human click an hour after that
    d4  c3 MOM email 07:30 Asia/Shanghai     skipped holdout
    d5  c4 MOM email 07:30 Asia/Shanghai     skipped holdout
    d6  c5 MOM email 07:30 America/New_York  sent
    d7  c2 DAD email 07:30 Europe/London     sent, carrying DAD-0042 (pool ``fd``, assigned to c2)
    d8  c5 MOM sms   07:30 America/New_York  skipped no_consent
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.inputs import ConversionInput
from topslot.coupons.codes import GeneratedScheme
from topslot.coupons.keys import active_coupon_key
from topslot.links import tokens
from topslot.links.keys import Keyring
from topslot.store.schema import campaigns, contacts, conversions, coupon_codes, deliveries, events

from .support import make_campaign

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


def signup(user_id: str, at: timedelta, **kw: Any) -> ConversionInput:
    return ConversionInput(user_id, SENT + at, D(0), kind="signup", **kw)


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


async def stored(engine: AsyncEngine) -> dict[tuple[str, bool | str], dict[str, Any]]:
    """Stored conversions: orders by (id, refund), signups by (id, "signup")."""
    async with engine.connect() as conn:
        result = await conn.execute(select(conversions))
        return {(r.order_id, bool(r.refund) if r.kind == "order" else r.kind): dict(r._mapping) for r in result}


def credit(row: dict[str, Any]) -> tuple:
    keys = ("attributed_by", "campaign_id", "delivery_id", "channel", "slot", "contact_id")
    return tuple(row[k] for k in keys)
