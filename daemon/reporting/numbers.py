"""Numbers as report text, shared by every renderer (table, HTML, SVG, JSON, CSV): never a negative
zero. A refund equal to the revenue, a lift of −0.00001 rounded to 4 places or a net profit of
−0.001 must print as ``0.00`` / ``0.0%``, not ``-0.00`` / ``-0.0%`` (Python's ``z`` format option
coerces a zero that rounding left negative; exact values go through ``unsigned``)."""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

N = TypeVar("N", Decimal, float)


def unsigned(value: N) -> N:
    """``value`` with a negative zero made positive (``Decimal('-0.00')`` → ``Decimal('0.00')``,
    ``-0.0`` → ``0.0``); every other value unchanged, places kept."""
    if isinstance(value, Decimal):
        return value.copy_abs() if value.is_zero() and value.is_signed() else value
    return value + 0.0  # -0.0 + 0.0 == +0.0


def exact(value: Decimal) -> str:
    """An exact decimal for JSON and CSV (``'140.00'``, ``'0.3333'``); never ``'-0.00'``."""
    return str(unsigned(value))


def percent(value: Decimal | float | None) -> str:
    """A ratio as a percentage to one place (0.3333 → ``'33.3%'``); ``'n/a'`` when unknown."""
    return "n/a" if value is None else f"{float(value) * 100:z,.1f}%"


def money(value: Decimal | float | None) -> str:
    """Money with two places and thousands separators (``'1,234.50'``); ``'n/a'`` when unknown."""
    return "n/a" if value is None else f"{value:z,.2f}"


def fixed(value: Decimal | float, places: int) -> str:
    """``value`` to ``places`` decimals, no separators (chart labels, intervals)."""
    return f"{value:z.{places}f}"
