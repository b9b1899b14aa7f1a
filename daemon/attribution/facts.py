"""The per-group facts of one campaign's ROI: its coupon/click conversions (``lines``), the
messages handed over per channel, and the treated/holdout counts of the lift, read from the store
(``daemon.store.conversions``) and summed with ``roi.totals``; ``ConversionFacts.figures`` turns
them into ``roi.RoiFigures``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from daemon.attribution.roi import ConversionLine, LiftCounts, RoiFigures, Totals, money, roi_figures, totals
from daemon.attribution.rules import HOLDOUT_REASON, REVENUE_ATTRIBUTIONS
from daemon.attribution.windows import campaign_window
from daemon.campaign import Campaign, Costs
from daemon.store import conversions as store
from daemon.store.conversions import LiftArm, SentCount, StoredConversion

GroupBy = Literal["channel", "slot", "timezone"]
GROUP_KEYS: tuple[str, ...] = ("channel", "slot", "timezone")
ALL = "all"  # the group key when facts are not grouped
NO_GROUP = "(none)"  # conversions credited to the campaign without a known delivery


@dataclass(frozen=True, slots=True)
class GroupFacts:
    """One group of a campaign: a channel, a slot, a zone, or ``all``."""

    key: str
    sent: dict[str, int]  # channel → messages handed over (sent, delivered, bounced, unknown)
    totals: Totals  # coupon/click conversions credited to deliveries of this group
    lift: LiftCounts  # contacts sent / held out in this group, and their purchases in the window

    def figures(self, costs: Costs) -> RoiFigures:
        return roi_figures(self.key, self.totals, self.sent, costs, self.lift)


@dataclass(frozen=True, slots=True)
class ConversionFacts:
    """What the ROI report of one campaign needs from conversions and the ledger.

    ``groups`` is keyed by the ``by`` column's values (``"all"`` only, when ``by`` is None);
    conversions credited by coupon to the campaign without a sent delivery go to group ``"(none)"``
    and always count in ``total``. ``lines`` has every coupon/click conversion (for other
    groupings, e.g. by segment: group them with ``daemon.attribution.roi.totals``).
    """

    campaign_id: str
    currency: str
    by: str | None
    window: tuple[datetime, datetime]  # the lift window (UTC)
    lines: list[ConversionLine]
    sent: list[SentCount]
    groups: dict[str, GroupFacts]
    total: GroupFacts

    @property
    def currency_mismatches(self) -> int:
        return self.total.totals.currency_mismatches

    def figures(self, costs: Costs) -> dict[str, RoiFigures]:
        """ROI figures per group, and under ``"all"`` the total."""
        result = {key: group.figures(costs) for key, group in sorted(self.groups.items())}
        result[ALL] = self.total.figures(costs)
        return result


async def conversion_facts(engine: AsyncEngine, campaign: Campaign, *, by: GroupBy | None = None) -> ConversionFacts:
    """The conversions, sends and lift counts of ``campaign``, per ``by`` group (channel, slot or
    timezone) and in total. Money in ``campaign.costs.currency``; other currencies are counted in
    ``currency_mismatches`` and left out of the sums."""
    if by is not None and by not in GROUP_KEYS:
        raise ValueError(f"group by one of {', '.join(GROUP_KEYS)}, not {by!r}")
    currency = campaign.costs.currency
    window = campaign_window(campaign)
    async with engine.connect() as conn:
        stored = await store.conversion_lines(conn, campaign.id, REVENUE_ATTRIBUTIONS)
        sent = await store.sent_counts(conn, campaign.id)
        total_lift = (await _lift(conn, campaign, None, window)).get(ALL, LiftCounts())
        group_lift = await _lift(conn, campaign, by, window) if by else {}
    lines = [conversion_line(s) for s in stored]
    margin = campaign.costs.margin
    total = GroupFacts(
        ALL, _sent_by_channel(sent, None, None), totals(lines, currency=currency, default_margin=margin), total_lift
    )
    groups: dict[str, GroupFacts] = {}
    if by is None:
        groups[ALL] = total
    else:
        grouped: dict[str, list[ConversionLine]] = defaultdict(list)
        for line in lines:
            grouped[getattr(line, by) or NO_GROUP].append(line)
        keys = set(grouped) | {getattr(s, by) for s in sent} | set(group_lift)
        for key in sorted(keys):
            groups[key] = GroupFacts(
                key,
                _sent_by_channel(sent, by, key),
                totals(grouped.get(key, ()), currency=currency, default_margin=margin),
                group_lift.get(key, LiftCounts()),
            )
    return ConversionFacts(campaign.id, currency, by, window, lines, sent, groups, total)


def conversion_line(row: StoredConversion) -> ConversionLine:
    """A stored conversion as the ROI maths reads it (amounts rounded to cents)."""
    return ConversionLine(
        order_id=row.order_id,
        refund=row.refund,
        revenue=money(row.revenue),
        discount=money(row.discount),
        units=row.units,
        margin=row.margin,
        currency=row.currency,
        contact_id=row.contact_id,
        attributed_by=row.attributed_by,
        delivery_id=row.delivery_id,
        channel=row.channel,
        slot=row.slot,
        timezone=row.timezone,
        occurred_at=row.occurred_at,
    )


async def _lift(
    conn: AsyncConnection, campaign: Campaign, by: str | None, window: tuple[datetime, datetime]
) -> dict[str, LiftCounts]:
    arms = await store.lift_arms(
        conn, campaign.id, by=by, window=window, currency=campaign.costs.currency, holdout_reason=HOLDOUT_REASON
    )
    return lift_counts(arms)


def lift_counts(arms: Iterable[LiftArm]) -> dict[str, LiftCounts]:
    """Group (``"all"`` when not grouped) → its treated and holdout arms as ``LiftCounts`` (net
    revenue rounded to cents)."""
    found: dict[str, dict[str, tuple[int, int, Decimal]]] = defaultdict(dict)
    for arm in arms:
        found[ALL if arm.group is None else arm.group][arm.arm] = (arm.contacts, arm.purchasers, money(arm.net_revenue))
    result = {}
    for group, both in found.items():
        t = both.get("treated", (0, 0, Decimal(0)))
        h = both.get("holdout", (0, 0, Decimal(0)))
        result[group] = LiftCounts(t[0], t[1], t[2], h[0], h[1], h[2])
    return result


def _sent_by_channel(sent: Iterable[SentCount], by: str | None, key: str | None) -> dict[str, int]:
    result: Counter[str] = Counter()
    for s in sent:
        if by is None or getattr(s, by) == key:
            result[s.channel] += s.messages
    return dict(result)
