"""A bucket's tally: outcomes, acceptances after the slot, throughput, and merging the processes'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from topslot.delivery import DeliveryState as S
from topslot.dispatch.tally import BucketTally

DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return DUE + timedelta(seconds=seconds)


def test_acceptances_after_the_slot_are_counted_with_the_latest() -> None:
    tally = BucketTally(DUE)
    tally.started(at(-10))
    for s in (-9, -1, 0, 2.5, 1):
        tally.add(S.SENT, at(s))
    tally.add(S.RETRY_WAIT)
    tally.add(S.FAILED)
    assert tally.outcomes == {"sent": 5, "retry_wait": 1, "failed": 1}
    assert tally.accepted == 5 and tally.late == 2 and tally.max_late_s == 2.5  # exactly at the slot is on time
    assert (tally.first_accepted, tally.last_accepted) == (at(-9), at(2.5))
    assert tally.throughput() == 5 / 12.5  # from the first chunk to the last acceptance


def test_merging_another_process_tally_of_the_same_bucket() -> None:
    mine, theirs = BucketTally(DUE), BucketTally(DUE)
    mine.started(at(-8))
    mine.add(S.SENT, at(-7))
    theirs.started(at(-9))
    theirs.add(S.SENT, at(3))
    theirs.add(S.UNKNOWN)
    mine.merge(theirs)
    assert mine.outcomes == {"sent": 2, "unknown": 1}
    assert (mine.accepted, mine.late, mine.max_late_s) == (2, 1, 3.0)
    assert (mine.first_send, mine.first_accepted, mine.last_accepted) == (at(-9), at(-7), at(3))
    empty = BucketTally(DUE)
    empty.merge(mine)
    assert (empty.first_send, empty.last_accepted, empty.accepted) == (at(-9), at(3), 2)


def test_too_short_a_send_has_no_throughput() -> None:
    tally = BucketTally(DUE)
    assert tally.throughput() is None  # nothing sent
    tally.started(at(-5))
    tally.add(S.SENT, at(-4))
    assert tally.throughput() is None  # 1 s: a burst says nothing about the rate


def test_stragglers_count_as_accepted_and_late_but_not_in_the_throughput() -> None:
    tally = BucketTally(DUE)
    tally.started(at(-10))
    for i in range(40):
        tally.add(S.SENT, at(-10 + (i + 1) * 0.1))  # 40 in 4 s: 10/s
    tally.add(S.SENT, at(20), straggler=True)  # a server stalled on this one for half a minute
    assert (tally.accepted, tally.late, tally.last_accepted) == (41, 1, at(20))
    assert tally.throughput() == 40 / 4  # the route kept its pace
