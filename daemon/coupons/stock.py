"""Coupon stock decisions, pure: how much is left, is it enough for a plan, when to warn, and what
to do for a recipient when the pool is empty (``on_exhausted``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from topslot.delivery import SkipReason

LOW_STOCK_FRACTION = 0.10
OnExhausted = Literal["pause", "skip", "send_without"]


@dataclass(frozen=True, slots=True)
class PoolStock:
    pool: str
    available: int
    reserved: int
    assigned: int

    @property
    def total(self) -> int:
        return self.available + self.reserved + self.assigned

    @property
    def fraction_left(self) -> float:
        return self.available / self.total if self.total else 0.0

    @property
    def low(self) -> bool:
        return is_low(self.available, self.total)


def is_low(available: int, total: int, fraction: float = LOW_STOCK_FRACTION) -> bool:
    """At or below ``fraction`` of the pool left (an empty pool is low)."""
    return available <= total * fraction


def crossed_low(before: int, after: int, total: int, fraction: float = LOW_STOCK_FRACTION) -> bool:
    """True for the one change of stock that went from above the threshold to at or below it."""
    return total > 0 and not is_low(before, total, fraction) and is_low(after, total, fraction)


def crossed_empty(before: int, after: int) -> bool:
    """True for the one change of stock that took the last code."""
    return before > 0 and after == 0


@dataclass(frozen=True, slots=True)
class StockCheck:
    """``plan``'s verdict on a campaign's coupons before launch."""

    ok: bool
    needed: int  # recipients still without a code
    available: int | None  # codes left in the pool (None: generated codes, no stock)
    shortfall: int
    message: str


def check_pool(
    pool: str, needed: int, available: int, on_exhausted: OnExhausted, total: int | None = None
) -> StockCheck:
    """Is the pool big enough for the recipients who still need a code?"""
    shortfall = max(0, needed - available)
    if shortfall == 0:
        left = available - needed
        message = f"pool {pool}: {needed} codes needed, {available} available ({left} left after the campaign)"
        if total and is_low(left, total):
            message += "; that is 10 % or less of the pool"
        return StockCheck(True, needed, available, 0, message)
    effect = {
        "pause": "the campaign will pause when it runs out",
        "skip": f"{shortfall} recipients will be skipped",
        "send_without": f"{shortfall} recipients will get the message without a code",
    }[on_exhausted]
    message = f"pool {pool}: {needed} codes needed, only {available} available (short by {shortfall}): {effect}"
    return StockCheck(False, needed, available, shortfall, message)


def check_generated(needed: int, highest_contact_id: int | None, capacity: int, length: int) -> StockCheck:
    """Generated codes never run out, but a code of ``length`` carries contact ids up to ``capacity``."""
    if highest_contact_id is None or highest_contact_id <= capacity:
        return StockCheck(True, needed, None, 0, f"generated codes: {needed} needed, none can run out")
    return StockCheck(
        False,
        needed,
        None,
        0,
        f"generated codes of length {length} carry contact ids up to {capacity}, "
        f"but the audience reaches {highest_contact_id}: raise coupon.generate.length",
    )


class ExhaustedAction(Enum):
    PAUSE = "pause"  # put the row back (planned), pause the campaign until codes are imported
    SKIP = "skip"  # skip the row with reason coupon_exhausted
    SEND_WITHOUT = "send_without"  # send it with an empty coupon


@dataclass(frozen=True, slots=True)
class ExhaustedDecision:
    action: ExhaustedAction
    skip_reason: str | None  # for SKIP
    coupon: str | None  # what the template sees as ``coupon`` for SEND_WITHOUT ("")


def on_exhausted(policy: OnExhausted) -> ExhaustedDecision:
    """What to do with a recipient for whom no code could be reserved."""
    action = ExhaustedAction(policy)
    if action is ExhaustedAction.SKIP:
        return ExhaustedDecision(action, SkipReason.COUPON_EXHAUSTED, None)
    if action is ExhaustedAction.SEND_WITHOUT:
        return ExhaustedDecision(action, None, "")
    return ExhaustedDecision(action, None, None)
