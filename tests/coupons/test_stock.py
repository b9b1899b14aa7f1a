"""Stock decisions: low-stock crossings, plan checks, on_exhausted."""

from __future__ import annotations

import pytest

from topslot.coupons.stock import (
    ExhaustedAction,
    PoolStock,
    check_generated,
    check_pool,
    crossed_empty,
    crossed_low,
    is_low,
    on_exhausted,
)


def test_pool_stock_totals() -> None:
    stock = PoolStock("p", available=10, reserved=5, assigned=85)
    assert stock.total == 100 and stock.fraction_left == 0.10 and stock.low
    assert not PoolStock("p", 11, 0, 89).low
    assert PoolStock("p", 0, 0, 0).fraction_left == 0.0


def test_low_stock_fires_once_per_crossing() -> None:
    total, available, fired = 1000, 1000, []
    for take in [37] * 40:  # 37 codes per batch down to 0
        before, available = available, max(0, available - take)
        if crossed_low(before, available, total):
            fired.append(available)
    assert fired == [75]  # 112 → 75: the only batch that went from above 100 to at most 100
    assert crossed_low(101, 100, 1000) and not crossed_low(100, 99, 1000) and not crossed_low(200, 150, 1000)
    assert not crossed_low(0, 0, 0)
    assert is_low(0, 0)


def test_empty_crossing() -> None:
    assert crossed_empty(5, 0) and not crossed_empty(0, 0) and not crossed_empty(5, 1)


def test_plan_check_for_a_pool() -> None:
    ok = check_pool("spring", needed=800, available=1000, on_exhausted="pause", total=1000)
    assert ok.ok and ok.shortfall == 0 and "800 codes needed, 1000 available" in ok.message
    assert "10 % or less" not in ok.message
    tight = check_pool("spring", needed=950, available=1000, on_exhausted="pause", total=1000)
    assert tight.ok and "10 % or less" in tight.message
    short = check_pool("spring", needed=1200, available=1000, on_exhausted="skip", total=1000)
    assert not short.ok and short.shortfall == 200 and "200 recipients will be skipped" in short.message
    assert "pause" in check_pool("p", 2, 1, "pause").message
    assert "without a code" in check_pool("p", 2, 1, "send_without").message


def test_plan_check_for_generated_codes() -> None:
    assert check_generated(500, 400, capacity=1023, length=7).ok
    assert check_generated(0, None, capacity=31, length=6).ok
    too_big = check_generated(500, 5000, capacity=1023, length=7)
    assert not too_big.ok and "raise coupon.generate.length" in too_big.message


@pytest.mark.parametrize(
    ("policy", "action", "reason", "coupon"),
    [
        ("pause", ExhaustedAction.PAUSE, None, None),
        ("skip", ExhaustedAction.SKIP, "coupon_exhausted", None),
        ("send_without", ExhaustedAction.SEND_WITHOUT, None, ""),
    ],
)
def test_on_exhausted(policy: str, action: ExhaustedAction, reason: str | None, coupon: str | None) -> None:
    decision = on_exhausted(policy)  # type: ignore[arg-type]
    assert (decision.action, decision.skip_reason, decision.coupon) == (action, reason, coupon)
