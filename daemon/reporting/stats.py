"""Confidence intervals for the slot comparison (pure, floats, no I/O, no SciPy).

Every interval is two-sided at 95 % (``Z95`` = 1.959964, the normal quantile); each function
returns ``None`` when its inputs cannot give one (an empty sample, a variance from one value).

- ``wilson``: the Wilson score interval of one proportion (Wilson 1927) — good at small counts and
  near 0 % or 100 %, never outside [0, 1]. 10 of 100 → 0.0552–0.1744.
- ``newcombe``: the difference of two independent proportions, p₁ − p₂, by Newcombe's hybrid score
  method (Newcombe 1998, method 10), built from the two Wilson intervals. 56/70 − 48/80 → 0.0524–0.3339.
- ``mean_interval``: the mean of a sample known by its count, sum and sum of squares, ± z × the
  standard error (sample variance, n − 1) — the normal approximation.
- ``welch``: the difference of two means, m₁ − m₂, ± z × the unpooled (Welch) standard error
  √(s₁²/n₁ + s₂²/n₂), with the normal quantile rather than Student's t (the report only compares
  samples of at least ``topslot.reporting.slots.MIN_RECIPIENTS``, where the two barely differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval, ``low`` ≤ ``estimate`` ≤ ``high``."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """Both ends on the same side of zero: the difference is significant at this level."""
        return self.low > 0 or self.high < 0


def wilson(successes: int, n: int, z: float = Z95) -> Interval | None:
    """successes / n with its Wilson score interval; None when n is 0.

    Contract: 0 ≤ successes ≤ n; the interval lies in [0, 1] and contains successes / n."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({successes} of {n})")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Interval | None:
    """x1/n1 − x2/n2 with Newcombe's hybrid score interval; None when either n is 0.

    Contract: the interval lies in [−1, 1], contains the difference, and is antisymmetric
    (swapping the samples negates it)."""
    a, b = wilson(x1, n1, z), wilson(x2, n2, z)
    if a is None or b is None:
        return None
    d = a.estimate - b.estimate
    low = d - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, max(-1.0, low), min(1.0, high))


def _mean_and_variance(n: int, total: float, squares: float) -> tuple[float, float] | None:
    """(mean, sample variance) from n, Σx and Σx²; None below two values."""
    if n < 2:
        return None
    mean = total / n
    variance = max(0.0, (squares - total * total / n) / (n - 1))  # rounding never makes it negative
    return mean, variance


def mean_interval(n: int, total: float, squares: float, z: float = Z95) -> Interval | None:
    """Σx / n ± z × s / √n, from n, Σx and Σx²; None below two values (no variance)."""
    moments = _mean_and_variance(n, total, squares)
    if moments is None:
        return None
    mean, variance = moments
    half = z * math.sqrt(variance / n)
    return Interval(mean, mean - half, mean + half)


def welch(
    n1: int, total1: float, squares1: float, n2: int, total2: float, squares2: float, z: float = Z95
) -> Interval | None:
    """mean₁ − mean₂ ± z × √(s₁²/n₁ + s₂²/n₂); None when either sample has fewer than two values."""
    a, b = _mean_and_variance(n1, total1, squares1), _mean_and_variance(n2, total2, squares2)
    if a is None or b is None:
        return None
    d = a[0] - b[0]
    half = z * math.sqrt(a[1] / n1 + b[1] / n2)
    return Interval(d, d - half, d + half)
