"""Crediting one conversion to a campaign, a delivery, a channel and a slot (pure).

Order of precedence:
1. **coupon** — the code names the campaign and the contact (a coupon counts whenever it is used).
   The delivery is the one the click id names if it is that contact's delivery of that campaign,
   else that contact's delivery carrying the code that was handed over last before the order;
2. **click** — a verified ``tsid`` names the delivery; it counts if the order came at most the
   campaign's click window after the last click recorded on that delivery before the order (or,
   with no click recorded, after the delivery was handed over);
3. **contact** — for the holdout lift only: the contact had a message or a holdout row of a loaded
   campaign and ordered inside that campaign's window (``windows.campaign_window``). Reports never
   count these as the campaign's revenue;
4. **none**.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from topslot.attribution.coupons import CouponMatch
from topslot.attribution.inputs import ConversionInput
from topslot.attribution.windows import campaign_window, click_window, within_click_window
from topslot.campaign import Campaign
from topslot.delivery import MAYBE_HANDED_OVER, SkipReason
from topslot.delivery import DeliveryState as S

AttributedBy = Literal["coupon", "click", "contact", "none"]
REVENUE_ATTRIBUTIONS = ("coupon", "click")  # what counts as the campaign's revenue
# a message in one of these states was handed to a provider: its recipient counts as treated
SENT_STATES = tuple(MAYBE_HANDED_OVER)  # the treated group: perhaps in the recipient's hands
HOLDOUT_REASON = SkipReason.HOLDOUT
CLOCK_SKEW = timedelta(minutes=5)  # the shop's clock against ours: a click this much "after" still counts


@dataclass(frozen=True, slots=True)
class DeliveryFacts:
    """What attribution needs of one ledger row."""

    id: int
    campaign_id: str
    contact_id: int
    channel: str
    slot: str
    state: str
    skip_reason: str | None
    coupon_code: str | None
    due_utc: datetime
    handed_over_at: datetime | None  # when a provider took it (the row's updated_at once sent)

    @property
    def sent(self) -> bool:
        return self.state in SENT_STATES

    @property
    def held_out(self) -> bool:
        return self.state == S.SKIPPED and self.skip_reason == HOLDOUT_REASON


@dataclass(frozen=True, slots=True)
class ClickFacts:
    """A verified click id: its delivery (None when the row is gone) and the clicks recorded on it."""

    delivery: DeliveryFacts | None
    clicks: tuple[datetime, ...] = ()  # human (non-scanner) clicks; all clicks when none is human


@dataclass(frozen=True, slots=True)
class Attribution:
    attributed_by: AttributedBy
    campaign_id: str | None = None
    delivery_id: int | None = None
    channel: str | None = None
    slot: str | None = None
    contact_id: int | None = None
    coupon_code: str | None = None  # the matched code's stored form
    note: str | None = None  # why a clue did not count (click_outside_window, click_not_found, ...)


def attribute(
    conversion: ConversionInput,
    *,
    coupon: CouponMatch | None = None,
    coupon_deliveries: Sequence[DeliveryFacts] = (),
    click: ClickFacts | None = None,
    click_note: str | None = None,
    contact_id: int | None = None,
    contact_deliveries: Sequence[DeliveryFacts] = (),
    campaigns: Mapping[str, Campaign] | None = None,
) -> Attribution:
    """Credit ``conversion`` from what the store found. ``contact_id``: the contact ``contact_ref``
    names; ``contact_deliveries``: that contact's sent and holdout rows (any campaign)."""
    campaigns = campaigns or {}
    at = conversion.occurred_at
    click_delivery = click.delivery if click is not None else None
    notes = [click_note] if click_note else []
    if click is not None and click_delivery is None:
        notes.append("click_delivery_not_found")

    if coupon is not None:
        if (
            click_delivery is not None
            and click_delivery.campaign_id == coupon.campaign_id
            and click_delivery.contact_id == coupon.contact_id
        ):
            chosen: DeliveryFacts | None = click_delivery
        else:
            mine = [
                d for d in coupon_deliveries if (d.campaign_id, d.contact_id) == (coupon.campaign_id, coupon.contact_id)
            ]
            chosen = choose_delivery(mine, at, coupon.code)
        return _credit("coupon", coupon.campaign_id, chosen, coupon.contact_id, coupon.code, notes)

    if click_delivery is not None:
        window = click_window(campaigns.get(click_delivery.campaign_id))
        reference = last_touch(click, at)
        if reference is not None and within_click_window(reference, at, window):
            return _credit("click", click_delivery.campaign_id, click_delivery, click_delivery.contact_id, None, notes)
        notes.append("click_outside_window")
        contact_id = contact_id if contact_id is not None else click_delivery.contact_id

    if contact_id is not None:
        row = lift_row(contact_deliveries, at, campaigns)
        if row is not None:
            return _credit("contact", row.campaign_id, row, contact_id, None, notes)
    return Attribution("none", contact_id=contact_id, note=";".join(notes) or None)


def _credit(
    by: AttributedBy,
    campaign_id: str,
    delivery: DeliveryFacts | None,
    contact_id: int | None,
    code: str | None,
    notes: list[str],
) -> Attribution:
    return Attribution(
        by,
        campaign_id,
        delivery.id if delivery else None,
        delivery.channel if delivery else None,
        delivery.slot if delivery else None,
        contact_id,
        code,
        ";".join(notes) or None,
    )


def last_touch(click: ClickFacts | None, occurred_at: datetime) -> datetime | None:
    """The last click at or before the order (allowing ``CLOCK_SKEW``), else the hand-over time."""
    if click is None or click.delivery is None:
        return None
    before = [c for c in click.clicks if c <= occurred_at + CLOCK_SKEW]
    if before:
        return min(max(before), occurred_at)
    return click.delivery.handed_over_at


def choose_delivery(rows: Iterable[DeliveryFacts], occurred_at: datetime, code: str | None) -> DeliveryFacts | None:
    """The sent row that carried ``code`` (any sent row if none did) handed over last before the
    order; if all came later, the first one."""
    sent = [r for r in rows if r.sent]
    carrying = [r for r in sent if code is not None and r.coupon_code == code] or sent
    if not carrying:
        return None
    times = [(r.handed_over_at or r.due_utc, r.id, r) for r in carrying]
    before = [t for t in times if t[0] <= occurred_at]
    return max(before)[2] if before else min(times)[2]


def lift_row(
    rows: Iterable[DeliveryFacts], occurred_at: datetime, campaigns: Mapping[str, Campaign]
) -> DeliveryFacts | None:
    """The sent or holdout row of a loaded campaign whose window holds the order: the latest due
    at or before it, else the earliest."""
    fitting = []
    for row in rows:
        campaign = campaigns.get(row.campaign_id)
        if campaign is None or not (row.sent or row.held_out):
            continue
        start, end = campaign_window(campaign)
        if start <= occurred_at < end:
            fitting.append((row.due_utc, row.id, row))
    if not fitting:
        return None
    before = [f for f in fitting if f[0] <= occurred_at]
    return max(before)[2] if before else min(fitting)[2]
