"""Readers of the ledger use ``topslot.delivery``'s state groups, never lists of their own: a state
added there is counted everywhere at once."""

from __future__ import annotations

from topslot.delivery import FINAL, HANDED_OVER, IN_FLIGHT, MAYBE_HANDED_OVER, WAITING, DeliveryState
from topslot.reporting.data import CHARGEABLE_STATES, PENDING_STATES
from topslot.store.coupons import HOLDING_STATES

S = DeliveryState


def test_the_report_counts_every_state_once_as_pending_or_final() -> None:
    assert set(PENDING_STATES) == WAITING | IN_FLIGHT
    assert not set(PENDING_STATES) & FINAL and set(PENDING_STATES) | FINAL == set(S)
    assert set(CHARGEABLE_STATES) == MAYBE_HANDED_OVER and HANDED_OVER < set(CHARGEABLE_STATES)


def test_a_coupon_is_held_by_every_row_that_may_carry_it() -> None:
    assert set(HOLDING_STATES) == IN_FLIGHT | MAYBE_HANDED_OVER | {S.RETRY_WAIT}
    assert not set(HOLDING_STATES) & {S.PLANNED, S.FAILED, S.SKIPPED}  # never built, or given up: given back
    assert list(HOLDING_STATES) == sorted(HOLDING_STATES)  # a stable order in SQL
