"""The slot comparison's intervals against published values (Wilson 1927; Newcombe 1998, Stat. Med.
17:873, tables I and II, method 10) and against hand-worked means."""

from __future__ import annotations

import math

import pytest

from topslot.reporting.stats import Z95, Interval, mean_interval, newcombe, welch, wilson


def _rounded(interval: Interval | None, places: int = 4) -> tuple[float, float]:
    assert interval is not None
    return round(interval.low, places), round(interval.high, places)


def test_wilson_known_values() -> None:
    assert _rounded(wilson(10, 100)) == (0.0552, 0.1744)
    assert _rounded(wilson(81, 263)) == (0.2553, 0.3662)  # Newcombe 1998 (table I)
    assert _rounded(wilson(0, 10)) == (0.0, 0.2775)  # never below zero
    assert _rounded(wilson(10, 10)) == (0.7225, 1.0)
    assert wilson(0, 0) is None
    with pytest.raises(ValueError):
        wilson(3, 2)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ],
)
def test_newcombe_textbook_examples(counts: tuple[int, int, int, int], expected: tuple[float, float]) -> None:
    interval = newcombe(*counts)
    assert _rounded(interval) == expected
    x1, n1, x2, n2 = counts
    assert interval is not None and math.isclose(interval.estimate, x1 / n1 - x2 / n2)
    swapped = newcombe(x2, n2, x1, n1)
    assert swapped is not None and _rounded(swapped) == (-expected[1], -expected[0])  # antisymmetric


def test_newcombe_needs_both_samples() -> None:
    assert newcombe(1, 10, 0, 0) is None and newcombe(0, 0, 1, 10) is None


def test_mean_interval_from_moments() -> None:
    values = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, sample variance 5/3
    interval = mean_interval(len(values), sum(values), sum(v * v for v in values))
    half = Z95 * math.sqrt((5 / 3) / 4)
    assert interval == pytest.approx(Interval(2.5, 2.5 - half, 2.5 + half))
    assert mean_interval(1, 5.0, 25.0) is None and mean_interval(0, 0.0, 0.0) is None
    flat = mean_interval(3, 6.0, 12.0)  # all 2: no spread
    assert flat is not None and (flat.low, flat.high) == (2.0, 2.0)


def test_welch_unpooled_difference() -> None:
    a, b = [1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 5.0]  # means 2 and 2; variances 1 and 14/3
    interval = welch(3, sum(a), sum(x * x for x in a), 4, sum(b), sum(x * x for x in b))
    half = Z95 * math.sqrt(1 / 3 + (14 / 3) / 4)
    assert interval == pytest.approx(Interval(0.0, -half, half))
    assert interval is not None and not interval.excludes_zero
    assert welch(1, 1.0, 1.0, 3, 3.0, 5.0) is None


def test_excludes_zero() -> None:
    assert Interval(1, 0.5, 2).excludes_zero and Interval(-1, -2, -0.1).excludes_zero
    assert not Interval(0.1, -0.1, 0.3).excludes_zero
