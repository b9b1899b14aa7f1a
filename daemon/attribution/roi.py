"""ROI maths (pure): conversions and sends of one group (a channel, a slot, a segment, a zone, or the
whole campaign) → orders, revenue, profit, ROI and the lift against the holdout.

Definitions (money is ``Decimal`` in the campaign's one currency; nothing is converted):
- **revenue** is what shoppers paid, after their discount; **refunds** are refund rows (positive
  amounts, ``refund=true``) and subtract: ``net revenue = revenue - refunds``, likewise units;
- **discount cost** = discounts of orders - discounts of refunded orders. It is shown, not subtracted
  again: revenue already lacks it;
- **gross profit** = Σ revenue × margin - Σ refunds × margin, where margin is the conversion's own
  margin when the shop sent one, else the margin of its product category in the campaign's
  ``costs.category_margins``, else the campaign's ``costs.margin``. A refund without a margin or a
  category takes its order's. When some row has no margin at all, gross profit is unknown (None,
  ``margin_basis`` ``unknown`` or ``mixed``): revenue is never passed off as profit;
- **margin %** = gross profit / net revenue;
- **send cost** = Σ per channel of messages handed over to a paid provider × ``costs.<channel>`` (an SMS counts
  its segments); a file outbox costs nothing;
- **promotion cost** = discount cost + send cost + fixed cost (``costs.fixed``, counted once, in the
  campaign's total only: ``roi_figures(..., fixed=...)``);
- **net profit** = gross profit - promotion cost; **ROI** = net profit / promotion cost; None when
  the promotion cost is 0 or gross profit is unknown;
- **incremental ROI** = (incremental net revenue × margin % - promotion cost) / promotion cost, where
  a holdout gives the incremental net revenue;
- **orders** count order rows, **purchasers** distinct contacts with an order (an order without a
  known contact counts as its own purchaser); **registered users** count signups (a signup is
  credited like an order and has no amounts);
- a conversion in another currency than the campaign's is left out of every sum and counted in
  ``currency_mismatches``;
- **lift**: purchase rate (purchasers / contacts) of the treated (sent) against the holdout;
  relative lift = treated rate / holdout rate - 1; incremental purchasers = (treated rate - holdout
  rate) × treated contacts; incremental net revenue likewise with revenue per contact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from topslot.campaign import Costs
from topslot.channel import CHANNELS

ZERO = Decimal(0)
CENT = Decimal("0.01")
RATIO = Decimal("0.0001")  # ROI and lifts: 4 decimals (0.0001 = 0.01 %)
RATE = Decimal("0.000001")
MarginBasis = Literal["conversion", "category", "campaign", "unknown", "mixed", "none"]


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def ratio(value: Decimal, places: Decimal = RATIO) -> Decimal:
    return value.quantize(places, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class ConversionLine:
    """One stored conversion as the maths reads it (amounts positive; ``refund`` subtracts)."""

    order_id: str
    refund: bool
    revenue: Decimal
    discount: Decimal = ZERO
    units: int = 0
    margin: Decimal | None = None
    currency: str | None = None
    contact_id: int | None = None
    # where it is credited, for grouping
    attributed_by: str = "coupon"
    delivery_id: int | None = None
    channel: str | None = None
    slot: str | None = None
    timezone: str | None = None
    occurred_at: datetime | None = None
    kind: str = "order"  # order | signup
    category: str | None = None


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums of a group's conversions (exact; ``RoiFigures`` rounds)."""

    orders: int = 0
    refund_rows: int = 0
    purchasers: int = 0
    units: int = 0
    units_refunded: int = 0
    revenue: Decimal = ZERO
    refunds: Decimal = ZERO
    discount: Decimal = ZERO
    discount_refunded: Decimal = ZERO
    profit: Decimal = ZERO
    profit_refunded: Decimal = ZERO
    by_own_margin: int = 0  # rows whose profit used the conversion's margin
    by_category_margin: int = 0  # ... the margin of its category (``costs.category_margins``)
    by_campaign_margin: int = 0
    at_full_margin: int = 0  # rows without any margin (their ``profit`` is at margin 1; shown as unknown)
    currency_mismatches: int = 0
    signups: int = 0  # registered users credited (their rows have no amounts)

    @property
    def net_revenue(self) -> Decimal:
        return self.revenue - self.refunds

    @property
    def net_units(self) -> int:
        return self.units - self.units_refunded

    @property
    def discount_cost(self) -> Decimal:
        return self.discount - self.discount_refunded

    @property
    def gross_profit(self) -> Decimal:
        return self.profit - self.profit_refunded

    @property
    def margin_basis(self) -> MarginBasis:
        used = [
            name
            for name, count in (
                ("conversion", self.by_own_margin),
                ("category", self.by_category_margin),
                ("campaign", self.by_campaign_margin),
                ("unknown", self.at_full_margin),
            )
            if count
        ]
        if not used:
            return "none"
        return used[0] if len(used) == 1 else "mixed"  # type: ignore[return-value]

    @property
    def margin_known(self) -> bool:
        """Every row had a margin (its own or the campaign's): gross profit can be told."""
        return self.at_full_margin == 0


def totals(
    lines: Iterable[ConversionLine],
    *,
    currency: str,
    default_margin: Decimal | None,
    category_margins: Mapping[str, Decimal] | None = None,
) -> Totals:
    """Sum ``lines`` (any order) in ``currency``; see the module docstring for every rule."""
    kept = []
    mismatches = signups = 0
    by_category = category_margins or {}
    for line in lines:
        if line.kind == "signup":
            signups += 1
        elif line.currency is not None and line.currency != currency:
            mismatches += 1
        else:
            kept.append(line)
    orders = {line.order_id: line for line in kept if not line.refund}
    t = {k: 0 for k in ("orders", "refund_rows", "units", "units_refunded", "own", "category", "campaign", "full")}
    sums = {k: ZERO for k in ("revenue", "refunds", "discount", "discount_refunded", "profit", "profit_refunded")}
    buyers: set[object] = set()
    for line in kept:
        source = line
        if line.refund and line.margin is None and line.category is None and line.order_id in orders:
            source = orders[line.order_id]  # a refund takes its order's margin or category
        margin = source.margin
        if margin is not None:
            t["own"] += 1
        elif source.category is not None and source.category in by_category:
            margin = by_category[source.category]
            t["category"] += 1
        elif default_margin is not None:
            margin = default_margin
            t["campaign"] += 1
        else:
            margin = Decimal(1)
            t["full"] += 1
        profit = line.revenue * margin
        if line.refund:
            t["refund_rows"] += 1
            t["units_refunded"] += line.units
            sums["refunds"] += line.revenue
            sums["discount_refunded"] += line.discount
            sums["profit_refunded"] += profit
        else:
            t["orders"] += 1
            t["units"] += line.units
            sums["revenue"] += line.revenue
            sums["discount"] += line.discount
            sums["profit"] += profit
            buyers.add(line.contact_id if line.contact_id is not None else ("order", line.order_id))
    return Totals(
        orders=t["orders"],
        refund_rows=t["refund_rows"],
        purchasers=len(buyers),
        units=t["units"],
        units_refunded=t["units_refunded"],
        revenue=sums["revenue"],
        refunds=sums["refunds"],
        discount=sums["discount"],
        discount_refunded=sums["discount_refunded"],
        profit=sums["profit"],
        profit_refunded=sums["profit_refunded"],
        by_own_margin=t["own"],
        by_category_margin=t["category"],
        by_campaign_margin=t["campaign"],
        at_full_margin=t["full"],
        currency_mismatches=mismatches,
        signups=signups,
    )


def send_costs(sent: Mapping[str, int], costs: Costs) -> dict[str, Decimal]:
    """Cost per channel: messages handed over × the campaign's cost of one message."""
    result: dict[str, Decimal] = {}
    for channel, count in sent.items():
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        if count < 0:
            raise ValueError(f"negative message count for {channel}")
        result[channel] = Decimal(count) * getattr(costs, channel)
    return result


@dataclass(frozen=True, slots=True)
class LiftCounts:
    """Contacts and their purchases (any attribution) in the campaign window, treated vs holdout."""

    treated_contacts: int = 0
    treated_purchasers: int = 0
    treated_revenue: Decimal = ZERO  # net
    holdout_contacts: int = 0
    holdout_purchasers: int = 0
    holdout_revenue: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Lift:
    counts: LiftCounts
    treated_rate: Decimal | None  # purchasers / contacts, 6 decimals
    holdout_rate: Decimal | None
    absolute: Decimal | None  # treated rate - holdout rate
    relative: Decimal | None  # treated rate / holdout rate - 1, 4 decimals; None if the holdout bought nothing
    incremental_purchasers: Decimal | None  # (treated - holdout rate) × treated contacts, 2 decimals
    incremental_revenue: Decimal | None  # (revenue per treated - per holdout contact) × treated contacts


def lift(counts: LiftCounts) -> Lift:
    """The lift of the treated over the holdout; None parts where a group is empty."""
    if counts.treated_purchasers > counts.treated_contacts or counts.holdout_purchasers > counts.holdout_contacts:
        raise ValueError("more purchasers than contacts")
    t_rate = Decimal(counts.treated_purchasers) / counts.treated_contacts if counts.treated_contacts else None
    h_rate = Decimal(counts.holdout_purchasers) / counts.holdout_contacts if counts.holdout_contacts else None
    absolute = relative = inc_buyers = inc_revenue = None
    if t_rate is not None and h_rate is not None:
        absolute = ratio(t_rate - h_rate, RATE)
        relative = ratio(t_rate / h_rate - 1) if h_rate else None
        inc_buyers = money((t_rate - h_rate) * counts.treated_contacts)
        per_treated = counts.treated_revenue / counts.treated_contacts
        per_holdout = counts.holdout_revenue / counts.holdout_contacts
        inc_revenue = money((per_treated - per_holdout) * counts.treated_contacts)
    return Lift(
        counts,
        ratio(t_rate, RATE) if t_rate is not None else None,
        ratio(h_rate, RATE) if h_rate is not None else None,
        absolute,
        relative,
        inc_buyers,
        inc_revenue,
    )


@dataclass(frozen=True, slots=True)
class RoiFigures:
    """Everything the report prints for one group, rounded: money to cents, ROI to 4 decimals."""

    group: str
    currency: str
    orders: int
    refund_rows: int
    purchasers: int
    signups: int  # registered users credited
    units: int  # net of refunds
    revenue: Decimal
    refunds: Decimal
    net_revenue: Decimal
    discount_cost: Decimal
    send_cost: Decimal
    gross_profit: Decimal | None  # None: some order has no margin
    net_profit: Decimal | None  # gross profit - promotion cost
    roi: Decimal | None  # net profit / promotion cost; None when nothing was spent or profit is unknown
    margin_basis: MarginBasis
    currency_mismatches: int
    send_cost_by_channel: dict[str, Decimal] = field(default_factory=dict)
    lift: Lift | None = None
    fixed_cost: Decimal = ZERO
    promotion_cost: Decimal = ZERO  # discount cost + send cost + fixed cost
    margin_pct: Decimal | None = None  # gross profit / net revenue, 4 decimals
    incremental_roi: Decimal | None = None  # (incremental net revenue × margin % - promotion cost) / promotion cost


def roi_figures(
    group: str,
    sums: Totals,
    sent: Mapping[str, int],
    costs: Costs,
    lift_counts: LiftCounts | None = None,
    *,
    fixed: Decimal = ZERO,
) -> RoiFigures:
    """The figures of one group: its conversion ``sums``, messages ``sent`` per channel, the
    campaign's ``costs``, (optionally) its treated/holdout counts, and the ``fixed`` cost it
    carries (the campaign's ``costs.fixed`` for the whole campaign; 0 for a part of it)."""
    by_channel = send_costs(sent, costs)
    send = sum(by_channel.values(), ZERO)
    promotion = money(sums.discount_cost) + money(send) + money(fixed)
    profit = money(sums.gross_profit) if sums.margin_known else None
    net = profit - promotion if profit is not None else None
    roi = ratio(net / promotion) if net is not None and promotion > 0 else None
    net_revenue = money(sums.net_revenue)
    margin_pct = ratio(profit / net_revenue) if profit is not None and net_revenue > 0 else None
    gains = lift(lift_counts) if lift_counts is not None else None
    incremental_roi = None
    if gains is not None and gains.incremental_revenue is not None and margin_pct is not None and promotion > 0:
        incremental_roi = ratio((gains.incremental_revenue * margin_pct - promotion) / promotion)
    return RoiFigures(
        group=group,
        currency=costs.currency,
        orders=sums.orders,
        refund_rows=sums.refund_rows,
        purchasers=sums.purchasers,
        signups=sums.signups,
        units=sums.net_units,
        revenue=money(sums.revenue),
        refunds=money(sums.refunds),
        net_revenue=money(sums.net_revenue),
        discount_cost=money(sums.discount_cost),
        send_cost=money(send),
        gross_profit=profit,
        net_profit=net,
        roi=roi,
        margin_basis=sums.margin_basis,
        currency_mismatches=sums.currency_mismatches,
        send_cost_by_channel={ch: money(v) for ch, v in by_channel.items()},
        lift=gains,
        fixed_cost=money(fixed),
        promotion_cost=promotion,
        margin_pct=margin_pct,
        incremental_roi=incremental_roi,
    )
