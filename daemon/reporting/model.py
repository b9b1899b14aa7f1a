"""What a report holds (pure, frozen). Counts are ints, money is Decimal, ratios are Decimal or None
(None: the denominator is zero). The money side is ``topslot.attribution.roi.RoiFigures``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from topslot.attribution.roi import RoiFigures
from topslot.reporting.slots import SlotComparison

DIMENSIONS = ("channel", "slot", "segment", "timezone", "domain")
NO_GROUP = "(none)"  # the group of rows whose key is missing (e.g. a contact without a country)


@dataclass(frozen=True)
class DeliveryCounts:
    """Ledger rows by outcome. ``planned`` is every row; ``sent`` were handed to a provider
    (sent + delivered + bounced), ``outbox`` of them only written to a file outbox (not sent, not
    paid); ``accepted`` is sent + delivered; ``pending`` is not yet decided (planned, claimed,
    sending, retry_wait)."""

    planned: int = 0
    pending: int = 0
    sent: int = 0
    outbox: int = 0
    accepted: int = 0
    delivered: int = 0
    bounced: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    # what the providers charge for, per channel: sent + unknown rows not written to an outbox; an SMS
    # counts its segments (costs.sms is the price of one segment)
    chargeable_by_channel: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True)
class ReturnedMail:
    """Email deliveries with a bounce (by kind) or a spam complaint (``topslot.bounces``), and the
    email messages really handed over (no outbox writes): what their rates divide by."""

    email_sent: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    blocked: int = 0
    complaints: int = 0

    def rate(self, count: int) -> Decimal | None:
        return (Decimal(count) / self.email_sent).quantize(Decimal("0.0001")) if self.email_sent else None


@dataclass(frozen=True)
class Engagement:
    """Opens or clicks: unique = deliveries with at least one, total = events."""

    human_unique: int = 0
    human_total: int = 0
    machine_unique: int = 0
    machine_total: int = 0


@dataclass(frozen=True)
class GroupFigures:
    key: str
    deliveries: DeliveryCounts
    opens: Engagement
    clicks: Engagement
    unsubscribes: int
    money: RoiFigures  # sales, costs, ROI and the lift (``topslot.attribution.roi``)
    ctr: Decimal | None  # unique human clicks / accepted
    click_to_open: Decimal | None  # unique human clicks / unique human opens
    returned: ReturnedMail = field(default_factory=ReturnedMail)  # bounces and complaints (email)


@dataclass(frozen=True)
class TimingBucket:
    """Human opens and clicks of one slot in one range of minutes since hand-over."""

    slot: str
    low: int  # minutes, inclusive
    high: int | None  # minutes, exclusive; None: open-ended
    opens: int
    clicks: int

    @property
    def label(self) -> str:
        return bucket_label(self.low, self.high)

    @property
    def short_label(self) -> str:
        """The lower edge only ("15m"; "1d+" for the last): fits under a narrow bar."""
        return minutes_text(self.low) + ("+" if self.high is None else "")


def minutes_text(minutes: int) -> str:
    """90 → '90m', 120 → '2h', 1440 → '1d', 0 → '0m'."""
    if minutes and minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes and minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def bucket_label(low: int, high: int | None) -> str:
    return f"{minutes_text(low)}+" if high is None else f"{minutes_text(low)}–{minutes_text(high)}"


@dataclass(frozen=True)
class Report:
    campaign_id: str
    campaign_name: str
    by: str
    currency: str
    generated_at: datetime
    window: tuple[datetime, datetime]  # [start, end) in UTC of the holdout comparison
    groups: list[GroupFigures]
    total: GroupFigures
    timing: list[TimingBucket] = field(default_factory=list)
    roi_by_channel: list[GroupFigures] = field(default_factory=list)  # for the HTML chart
    notes: list[str] = field(default_factory=list)
    slots: SlotComparison | None = None  # the slot comparison (topslot.reporting.slots)
