"""ROI maths against numbers worked out by hand (in the comments)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from topslot.attribution.roi import ConversionLine, LiftCounts, Totals, lift, roi_figures, send_costs, totals
from topslot.campaign import Costs

COSTS = Costs(email=D("0.002"), sms=D("0.05"), currency="USD", margin=D("0.40"))


def line(order: str, revenue: str, *, refund: bool = False, **kw: object) -> ConversionLine:
    return ConversionLine(order_id=order, refund=refund, revenue=D(revenue), **kw)  # type: ignore[arg-type]


MIXED = [
    line("O1", "100.00", discount=D("10.00"), units=2, contact_id=1),  # campaign margin: profit 40.00
    line("O2", "50.00", discount=D("5.00"), units=1, margin=D("0.6"), contact_id=2),  # own margin: 30.00
    line("O3", "30.00", units=1, contact_id=1),  # 12.00; contact 1 again: still one purchaser
    line("O2", "50.00", refund=True, discount=D("5.00"), units=1),  # takes O2's margin 0.6: -30.00
    line("O4", "20.00", currency="EUR", contact_id=3),  # another currency: left out, counted
    line("O5", "10.00", currency="USD"),  # no contact: its own purchaser; profit 4.00
]


def test_totals_of_orders_refunds_and_a_foreign_currency() -> None:
    t = totals(MIXED, currency="USD", default_margin=COSTS.margin)
    assert (t.orders, t.refund_rows, t.purchasers, t.currency_mismatches) == (4, 1, 3, 1)
    assert (t.units, t.units_refunded, t.net_units) == (4, 1, 3)
    assert t.revenue == D("190.00") and t.refunds == D("50.00") and t.net_revenue == D("140.00")
    assert t.discount_cost == D("10.00")  # 15.00 given - 5.00 given back with the refund
    assert t.gross_profit == D("56.00")  # 40 + 30 + 12 + 4 - 30
    assert (t.by_own_margin, t.by_campaign_margin, t.at_full_margin) == (2, 3, 0)
    assert t.margin_basis == "mixed"


def test_roi_of_the_mixed_group() -> None:
    figures = roi_figures(
        "all", totals(MIXED, currency="USD", default_margin=COSTS.margin), {"email": 10_000, "sms": 200}, COSTS
    )
    # send cost: 10,000 × 0.002 + 200 × 0.05 = 20.00 + 10.00
    assert figures.send_cost_by_channel == {"email": D("20.00"), "sms": D("10.00")}
    assert figures.send_cost == D("30.00")
    # promotion cost: discount cost 10.00 + send cost 30.00 (+ no fixed cost)
    assert figures.promotion_cost == D("40.00") and figures.fixed_cost == D("0.00")
    assert figures.gross_profit == D("56.00") and figures.net_profit == D("16.00")
    assert figures.roi == D("0.4000")  # (56 - 40) / 40
    assert figures.margin_pct == D("0.4000")  # 56 / 140
    assert figures.incremental_roi is None  # no holdout
    assert (figures.revenue, figures.refunds, figures.net_revenue, figures.discount_cost) == (
        D("190.00"),
        D("50.00"),
        D("140.00"),
        D("10.00"),
    )
    assert figures.currency == "USD" and figures.currency_mismatches == 1 and figures.lift is None


def test_without_any_margin_gross_profit_and_roi_are_unknown() -> None:
    costs = Costs(email=D("0.01"))
    t = totals([line("A", "25.00", contact_id=1), line("A", "5.00", refund=True)], currency="USD", default_margin=None)
    assert t.margin_basis == "unknown" and not t.margin_known
    figures = roi_figures("email", t, {"email": 1000}, costs)
    assert figures.send_cost == D("10.00") and figures.promotion_cost == D("10.00")
    assert figures.gross_profit is None and figures.net_profit is None  # never revenue passed off as profit
    assert figures.roi is None and figures.margin_pct is None


def test_fixed_cost_joins_the_promotion_cost() -> None:
    costs = Costs(email=D("0.01"), margin=D("0.5"), fixed=D("100"))
    t = totals([line("A", "400.00", discount=D("100.00"), contact_id=1)], currency="USD", default_margin=costs.margin)
    figures = roi_figures("total", t, {"email": 1000}, costs, fixed=costs.fixed)
    # promotion cost = discount 100 + send 1000 × 0.01 = 10 + fixed 100 = 210; gross profit 400 × 0.5 = 200
    assert figures.promotion_cost == D("210.00") and figures.fixed_cost == D("100.00")
    assert figures.net_profit == D("-10.00") and figures.roi == D("-0.0476")  # -10 / 210
    part = roi_figures("email", t, {"email": 1000}, costs)  # a part of the campaign carries no fixed cost
    assert part.promotion_cost == D("110.00") and part.roi == D("0.8182")  # 90 / 110


def test_incremental_roi_against_the_holdout() -> None:
    costs = Costs(email=D("0.01"), margin=D("0.5"))
    t = totals([line("A", "300.00", contact_id=1)], currency="USD", default_margin=costs.margin)
    # treated: 100 contacts, 300.00 net; holdout: 100 contacts, 100.00 → incremental net revenue 200.00
    figures = roi_figures("total", t, {"email": 1000}, costs, LiftCounts(100, 10, D("300"), 100, 5, D("100")))
    assert figures.lift is not None and figures.lift.incremental_revenue == D("200.00")
    # (200 × 0.5 - 10) / 10 = 9; plain ROI (150 - 10) / 10 = 14
    assert figures.incremental_roi == D("9.0000") and figures.roi == D("14.0000")


def test_own_margin_everywhere_and_a_loss() -> None:
    t = totals([line("A", "10.00", margin=D("0.25"), contact_id=1)], currency="USD", default_margin=D("0.9"))
    assert t.margin_basis == "conversion" and t.gross_profit == D("2.50")
    figures = roi_figures("sms", t, {"sms": 100}, COSTS)  # 100 × 0.05 = 5.00, no discount
    assert figures.roi == D("-0.5000") and figures.net_profit == D("-2.50")  # (2.5 - 5) / 5


def test_no_promotion_cost_means_no_roi() -> None:
    t = totals([line("A", "9.99")], currency="USD", default_margin=D("0.5"))
    figures = roi_figures("im", t, {"im": 50}, COSTS)
    assert figures.promotion_cost == D("0.00") and figures.roi is None
    empty = roi_figures("none", Totals(), {}, COSTS)
    assert empty.roi is None and empty.margin_basis == "none" and empty.orders == 0


def test_profit_is_rounded_once_at_the_end() -> None:
    # three orders of 0.01 at margin 0.5: 0.005 each, 0.015 in total → 0.02 (half-even on the sum)
    t = totals([line(f"o{i}", "0.01") for i in range(3)], currency="USD", default_margin=D("0.5"))
    assert t.gross_profit == D("0.015")
    assert roi_figures("g", t, {}, COSTS).gross_profit == D("0.02")


def test_send_costs_refuse_unknown_channels_and_negative_counts() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        send_costs({"fax": 1}, COSTS)
    with pytest.raises(ValueError, match="negative"):
        send_costs({"email": -1}, COSTS)


def test_lift_against_the_holdout() -> None:
    result = lift(LiftCounts(1000, 50, D("2500.00"), 50, 1, D("40.00")))
    assert result.treated_rate == D("0.050000") and result.holdout_rate == D("0.020000")
    assert result.absolute == D("0.030000")
    assert result.relative == D("1.5000")  # 0.05 / 0.02 - 1
    assert result.incremental_purchasers == D("30.00")  # 0.03 × 1000
    assert result.incremental_revenue == D("1700.00")  # (2.50 - 0.80) × 1000


def test_lift_when_the_holdout_bought_nothing_or_is_empty() -> None:
    none_bought = lift(LiftCounts(200, 10, D("100.00"), 20, 0, D("0")))
    assert none_bought.relative is None and none_bought.absolute == D("0.050000")
    assert none_bought.incremental_purchasers == D("10.00")
    no_holdout = lift(LiftCounts(200, 10, D("100.00")))
    assert no_holdout.treated_rate == D("0.050000")
    assert (no_holdout.holdout_rate, no_holdout.absolute, no_holdout.relative, no_holdout.incremental_revenue) == (
        None,
        None,
        None,
        None,
    )
    with pytest.raises(ValueError):
        lift(LiftCounts(1, 2))


def test_figures_carry_the_lift() -> None:
    figures = roi_figures("all", Totals(), {"email": 1}, COSTS, LiftCounts(10, 2, D("20"), 10, 1, D("5")))
    assert figures.lift is not None and figures.lift.relative == D("1.0000")  # 0.2 / 0.1 - 1
