"""A small campaign whose every report figure is computed by hand (see the comments and the tests).

Campaign ``spring`` (email 0.10, sms 0.50 per message, margin 40 %), contacts c1..c10:

    d1  c1 US email 07:30 delivered    d7  c7 CN email 17:00 unknown
    d2  c2 US email 07:30 sent         d8  c8 -- email 07:30 planned
    d3  c3 US sms   17:00 sent         d9  c9 DE email 07:30 skipped holdout
    d4  c4 US email 17:00 bounced      d10 c10 DE sms  17:00 skipped holdout
    d5  c5 CN email 07:30 sent         d11 c1 US sms   17:00 skipped no_consent
    d6  c6 CN sms   07:30 failed       d12 c1 US email 07:30 sent (campaign ``other``)

Every delivery was handed over (``updated_at``) 5 minutes before its slot (``due_utc``).
Signups (registered users): u1 (d1, coupon), o2 (d2, click), u3 (d3 sms, click), u9 (holdout, contact).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Costs
from topslot.store.schema import campaigns, contact_tags, contacts, conversions, deliveries, events

CAMPAIGN = "spring"
NAME = 'Spring <sale> & "friends"'  # escaped everywhere it is shown
T0 = datetime(2027, 5, 6, tzinfo=UTC)
MORNING_DUE = datetime(2027, 5, 6, 11, 30, tzinfo=UTC)
EVENING_DUE = datetime(2027, 5, 6, 21, 0, tzinfo=UTC)
HANDOVER = timedelta(minutes=5)
WINDOW = (datetime(2027, 5, 5, tzinfo=UTC), datetime(2027, 5, 20, tzinfo=UTC))
COSTS = Costs(email=Decimal("0.10"), sms=Decimal("0.50"), margin=Decimal("0.40"), currency="USD")

COUNTRIES = {1: "US", 2: "US", 3: "US", 4: "US", 5: "CN", 6: "CN", 7: "CN", 8: None, 9: "DE", 10: "DE"}
# id: (campaign, contact, channel, slot, zone, state, skip reason)
ROWS = {
    1: (CAMPAIGN, 1, "email", "07:30", "America/New_York", "delivered", None),
    2: (CAMPAIGN, 2, "email", "07:30", "America/New_York", "sent", None),
    3: (CAMPAIGN, 3, "sms", "17:00", "America/Chicago", "sent", None),
    4: (CAMPAIGN, 4, "email", "17:00", "America/New_York", "bounced", None),
    5: (CAMPAIGN, 5, "email", "07:30", "Asia/Shanghai", "sent", None),
    6: (CAMPAIGN, 6, "sms", "07:30", "Asia/Shanghai", "failed", None),
    7: (CAMPAIGN, 7, "email", "17:00", "Asia/Shanghai", "unknown", None),
    8: (CAMPAIGN, 8, "email", "07:30", "Asia/Shanghai", "planned", None),
    9: (CAMPAIGN, 9, "email", "07:30", "Europe/Berlin", "skipped", "holdout"),
    10: (CAMPAIGN, 10, "sms", "17:00", "Europe/Berlin", "skipped", "holdout"),
    11: (CAMPAIGN, 1, "sms", "17:00", "America/New_York", "skipped", "no_consent"),
    12: ("other", 1, "email", "07:30", "America/New_York", "sent", None),
}
# (delivery, kind, label, minutes after hand-over)
EVENTS = [
    (1, "open", "machine_open", 0.5),
    (1, "open", "human", 3),  # 07:30 bucket 0–5m
    (1, "open", "human", 20),  # 07:30 bucket 15–30m
    (1, "click", "human", 21),  # 07:30 bucket 15–30m
    (2, "open", "machine_open", 1),
    (2, "click", "scanner", 0.2),
    (3, "click", "human", 70),  # 17:00 bucket 1h–2h; an SMS click makes d3 "opened"
    (5, "open", "human", 2),  # 07:30 bucket 0–5m
    (5, "open", None, 8),  # unlabelled counts as human; 07:30 bucket 5–10m
    (7, "open", "human", 30),  # 17:00 bucket 30m–1h
    (7, "unsubscribe", "human", 31),
    (12, "open", "human", 1),  # another campaign
]
# (order, refund, campaign, delivery, contact, attributed_by, revenue, discount, units, margin, occurred)
ORDERS = [
    ("o1", False, CAMPAIGN, 1, 1, "coupon", "100.00", "10.00", 2, None, T0 + timedelta(days=1)),
    ("o1", True, CAMPAIGN, 1, 1, "coupon", "40.00", "0", 1, None, T0 + timedelta(days=3)),
    ("o2", False, CAMPAIGN, 3, 3, "click", "50.00", "0", 1, "0.5000", T0 + timedelta(hours=23)),
    ("o3", False, CAMPAIGN, 5, 5, "coupon", "30.00", "5.00", 1, None, T0 + timedelta(days=2)),
    ("o4", False, CAMPAIGN, 9, 9, "contact", "20.00", "0", 1, None, T0 + timedelta(days=2)),  # holdout buyer
    ("o5", False, None, None, 2, "none", "15.00", "0", 1, None, T0 + timedelta(days=4)),  # treated buyer
    ("o6", False, "other", 12, 1, "coupon", "70.00", "0", 1, None, T0 + timedelta(days=1)),
    ("o7", False, None, None, 10, "none", "25.00", "0", 1, None, datetime(2027, 6, 1, tzinfo=UTC)),  # too late
    ("o8", False, CAMPAIGN, 5, 5, "coupon", "99.00", "0", 1, None, T0 + timedelta(days=2)),  # EUR: left out
]
CURRENCY = {"o8": "EUR"}
# signups (registered users): (user id, campaign, delivery, contact, attributed_by); "o2" is also an order id
SIGNUPS = [
    ("u1", CAMPAIGN, 1, 1, "coupon"),
    ("o2", CAMPAIGN, 2, 2, "click"),
    ("u3", CAMPAIGN, 3, 3, "click"),
    ("u9", CAMPAIGN, 9, 9, "contact"),  # a holdout contact: not credited to the campaign's figures
]


def due(delivery_id: int) -> datetime:
    return MORNING_DUE if ROWS[delivery_id][3] == "07:30" else EVENING_DUE


async def seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(campaigns),
            [
                {"id": c, "name": NAME if c == CAMPAIGN else c, "config_hash": "x", "loaded_at": T0}
                for c in (CAMPAIGN, "other")
            ],
        )
        await conn.execute(
            insert(contacts),
            [{"id": i, "external_id": f"c{i}", "email": f"c{i}@example.com", "country": country,
              "created_at": T0, "updated_at": T0} for i, country in COUNTRIES.items()],
        )  # fmt: skip
        await conn.execute(insert(contact_tags), [{"contact_id": 1, "tag": "vip"}, {"contact_id": 5, "tag": "vip"}])
        await conn.execute(
            insert(deliveries),
            [
                {"id": i, "campaign_id": camp, "contact_id": contact, "channel": channel, "slot_date": date(2027, 5, 6),
                 "slot": slot, "due_utc": due(i), "timezone": zone, "tz_source": "contact", "state": state, "skip_reason": reason,
                 "coupon_code": f"SPRING{i:04d}", "created_at": T0, "updated_at": due(i) - HANDOVER}
                for i, (camp, contact, channel, slot, zone, state, reason) in ROWS.items()
            ],
        )  # fmt: skip
        await conn.execute(
            insert(events),
            [
                {"delivery_id": d, "campaign_id": ROWS[d][0], "kind": kind, "label": label,
                 "occurred_at": due(d) - HANDOVER + timedelta(minutes=minutes)}
                for d, kind, label, minutes in EVENTS
            ],
        )  # fmt: skip
        await conn.execute(
            insert(conversions),
            [
                {"order_id": order, "refund": refund, "campaign_id": camp, "delivery_id": d, "contact_id": contact,
                 "channel": ROWS[d][2] if d else None, "slot": ROWS[d][3] if d else None, "attributed_by": by,
                 "revenue": Decimal(revenue), "discount": Decimal(discount), "units": units,
                 "margin": Decimal(margin) if margin else None, "currency": CURRENCY.get(order, "USD"),
                 "occurred_at": at, "received_at": at}
                for order, refund, camp, d, contact, by, revenue, discount, units, margin, at in ORDERS
            ],
        )  # fmt: skip
        await conn.execute(
            insert(conversions),
            [
                {"kind": "signup", "order_id": user, "campaign_id": camp, "delivery_id": d, "contact_id": contact,
                 "channel": ROWS[d][2], "slot": ROWS[d][3], "attributed_by": by, "revenue": Decimal(0),
                 "occurred_at": T0 + timedelta(hours=6), "received_at": T0 + timedelta(hours=6)}
                for user, camp, d, contact, by in SIGNUPS
            ],
        )  # fmt: skip
