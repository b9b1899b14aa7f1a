"""A campaign for the slot comparison, generated from a few arms so that tests can work out every
expected figure from ``ROWS`` itself (``expected_counts``), not from hard-coded numbers.

Campaign ``slotsplit`` (``slot_choice: split``), email and SMS, slots 07:30 and 17:00:
- randomised (``split`` / ``exploration``): 120 recipients per slot, 17:00 clicked far more;
- observational: 07:30 ``history`` (40 recipients), 17:00 ``default`` (10) and unrecorded (2);
- rows that are not recipients (failed, unknown, planned, skipped) with events and orders of their own;
- noise that must never count: machine opens, scanner clicks, orders credited by ``contact``, orders
  in another currency, and a campaign that sent to one slot only (``other``);
- campaign ``second``: 35 randomised recipients per slot, for the comparison across campaigns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store.schema import campaigns, contacts, conversions, deliveries, events

CAMPAIGN = "slotsplit"
SECOND = "second"  # another split campaign, for the comparison across campaigns
CURRENCY = "USD"
T0 = datetime(2027, 5, 6, tzinfo=UTC)
DUE = {"07:30": datetime(2027, 5, 6, 11, 30, tzinfo=UTC), "17:00": datetime(2027, 5, 6, 21, 0, tzinfo=UTC)}


@dataclass(frozen=True)
class Order:
    attributed_by: str  # coupon | click count; contact | none never do
    revenue: Decimal
    refund: Decimal | None = None  # a refund row of this amount too
    currency: str = CURRENCY


@dataclass(frozen=True)
class Row:
    id: int
    campaign: str
    slot: str
    basis: str | None
    channel: str
    state: str
    human_open: bool = False
    unlabelled_open: bool = False
    human_click: bool = False
    machine_open: bool = False
    scanner_click: bool = False
    orders: tuple[Order, ...] = ()


# (campaign, slot, slot_basis, channel, state, how many, open every, opens out of it, click every, clicks, buy every)
ARMS = [
    (CAMPAIGN, "07:30", "split", "email", "delivered", 70, 5, 2, 10, 1, 15),
    (CAMPAIGN, "07:30", "split", "email", "sent", 25, 5, 2, 10, 1, 15),
    (CAMPAIGN, "07:30", "split", "email", "bounced", 5, 5, 0, 10, 0, 0),
    (CAMPAIGN, "07:30", "split", "sms", "sent", 20, 1, 0, 10, 1, 15),
    (CAMPAIGN, "17:00", "split", "email", "delivered", 60, 20, 9, 10, 3, 12),
    (CAMPAIGN, "17:00", "exploration", "email", "sent", 40, 20, 9, 10, 3, 12),
    (CAMPAIGN, "17:00", "split", "sms", "delivered", 20, 1, 0, 10, 3, 12),
    (CAMPAIGN, "07:30", "history", "email", "sent", 40, 2, 1, 5, 1, 8),
    (CAMPAIGN, "17:00", "default", "email", "sent", 10, 2, 1, 5, 1, 8),
    (CAMPAIGN, "17:00", None, "email", "delivered", 2, 1, 1, 1, 1, 1),
    # not recipients: their events and orders never count
    (CAMPAIGN, "07:30", "split", "email", "failed", 5, 1, 1, 1, 1, 1),
    (CAMPAIGN, "17:00", "split", "email", "unknown", 3, 1, 1, 1, 1, 1),
    (CAMPAIGN, "07:30", "split", "email", "planned", 3, 1, 1, 1, 1, 1),
    (CAMPAIGN, "17:00", "split", "email", "skipped", 4, 1, 1, 1, 1, 1),
    ("other", "07:30", "split", "email", "sent", 6, 1, 1, 1, 1, 1),  # one slot only: left out of the pool
    (SECOND, "07:30", "split", "email", "delivered", 35, 3, 1, 4, 1, 9),
    (SECOND, "17:00", "split", "email", "delivered", 35, 3, 2, 4, 2, 6),
]
CAMPAIGNS = (CAMPAIGN, "other", SECOND)


def _rows() -> list[Row]:
    rows, i = [], 0
    for campaign, slot, basis, channel, state, count, open_every, opens, click_every, clicks, buy_every in ARMS:
        for k in range(count):
            i += 1
            opened = k % open_every < opens
            orders: tuple[Order, ...] = ()
            if buy_every and k % buy_every == 0:
                revenue = Decimal(10 + (k % 7) * 5) + Decimal("0.99")
                refund = Decimal("5.00") if k % 2 else None
                orders = (Order("coupon" if k % 3 else "click", revenue, refund),)
            if k % 11 == 3:
                orders += (Order("contact", Decimal("500.00")), Order("coupon", Decimal("80.00"), currency="EUR"))
            rows.append(
                Row(
                    id=i, campaign=campaign, slot=slot, basis=basis, channel=channel, state=state,
                    human_open=opened and k % 4 != 1, unlabelled_open=opened and k % 4 == 1,
                    human_click=k % click_every < clicks, machine_open=k % 3 == 0, scanner_click=k % 4 == 0,
                    orders=orders,
                )
            )  # fmt: skip
    return rows


ROWS = _rows()
RECIPIENT_STATES = ("sent", "delivered", "bounced")


@dataclass
class Expected:
    """What the report must show for one (evidence, slot), counted row by row."""

    recipients: int = 0
    open_recipients: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    nets: list[Decimal] = field(default_factory=list)  # net revenue per recipient

    @property
    def net(self) -> Decimal:
        return sum(self.nets, Decimal(0))


def expected_counts(campaign: str = CAMPAIGN) -> dict[tuple[str, str], Expected]:
    """(evidence, slot) → the figures the report must show, counted row by row from ``ROWS``."""
    out: dict[tuple[str, str], Expected] = {}
    for row in ROWS:
        if row.campaign != campaign or row.state not in RECIPIENT_STATES:
            continue
        evidence = "randomised" if row.basis in ("split", "exploration") else "observational"
        e = out.setdefault((evidence, row.slot), Expected())
        counted = [o for o in row.orders if o.attributed_by in ("coupon", "click") and o.currency == CURRENCY]
        e.recipients += 1
        if row.channel == "email":
            e.open_recipients += 1
            e.opened += int(row.human_open or row.unlabelled_open or row.human_click)
        e.clicked += int(row.human_click)
        e.converted += int(bool(counted))
        e.nets.append(sum((o.revenue - (o.refund or 0) for o in counted), Decimal(0)))
    return out


async def seed_slots(engine: AsyncEngine) -> None:
    handed_over = timedelta(minutes=5)
    async with engine.begin() as conn:
        await conn.execute(
            insert(campaigns),
            [{"id": c, "name": c, "config_hash": "x", "loaded_at": T0} for c in CAMPAIGNS],
        )
        await conn.execute(
            insert(contacts),
            [{"id": r.id, "external_id": f"s{r.id}", "email": f"s{r.id}@example.com", "created_at": T0,
              "updated_at": T0} for r in ROWS],
        )  # fmt: skip
        await conn.execute(
            insert(deliveries),
            [
                {"id": r.id, "campaign_id": r.campaign, "contact_id": r.id, "channel": r.channel,
                 "slot_date": date(2027, 5, 6), "slot": r.slot, "slot_basis": r.basis, "due_utc": DUE[r.slot],
                 "timezone": "America/New_York",
                 "tz_source": "contact", "state": r.state, "skip_reason": "holdout" if r.state == "skipped" else None,
                 "coupon_code": f"SLOT{r.id:05d}", "created_at": T0, "updated_at": DUE[r.slot] - handed_over}
                for r in ROWS
            ],
        )  # fmt: skip
        found = []
        for r in ROWS:
            at = DUE[r.slot]
            for flag, kind, label in (
                (r.human_open, "open", "human"), (r.unlabelled_open, "open", None), (r.human_click, "click", "human"),
                (r.machine_open, "open", "machine_open"), (r.scanner_click, "click", "scanner"),
            ):  # fmt: skip
                if flag:
                    found.append({"delivery_id": r.id, "campaign_id": r.campaign, "kind": kind, "label": label,
                                  "occurred_at": at})  # fmt: skip
            if r.human_open and r.id % 2:  # a second open by the same person: still one opener
                found.append({"delivery_id": r.id, "campaign_id": r.campaign, "kind": "open", "label": "human",
                              "occurred_at": at + timedelta(hours=1)})  # fmt: skip
        await conn.execute(insert(events), found)
        orders = []
        for r in ROWS:
            for n, o in enumerate(r.orders):
                base = {"order_id": f"o{r.id}-{n}", "campaign_id": r.campaign, "delivery_id": r.id,
                        "contact_id": r.id, "channel": r.channel, "slot": r.slot, "attributed_by": o.attributed_by,
                        "discount": Decimal(0), "units": 1, "currency": o.currency, "occurred_at": T0,
                        "received_at": T0}  # fmt: skip
                orders.append({**base, "refund": False, "revenue": o.revenue})
                if o.refund is not None:
                    orders.append({**base, "refund": True, "revenue": o.refund})
        await conn.execute(insert(conversions), orders)
