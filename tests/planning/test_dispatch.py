"""Dispatch windows: every bucket handed over inside [slot − arrive_within, slot], or told why not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from topslot.planning.dispatch import Bucket, dispatch_windows, human_seconds

DUE = datetime(2027, 5, 5, 23, 30, tzinfo=UTC)  # 07:30 in Shanghai
TEN_MIN = timedelta(minutes=10)


def test_small_bucket_starts_a_floor_before_the_slot() -> None:
    [w] = dispatch_windows([Bucket(DUE, "email", 500)], 2000, TEN_MIN)
    assert w.needed_s == 0.25
    assert w.start_utc == DUE - timedelta(seconds=60)
    assert w.fits and w.window_start_utc == DUE - TEN_MIN


def test_medium_bucket_keeps_as_much_again_for_retries() -> None:
    [w] = dispatch_windows([Bucket(DUE, "email", 240_000)], 2000, TEN_MIN)  # 120 s of sending
    assert w.start_utc == DUE - timedelta(seconds=240)
    assert w.fits


def test_bucket_that_fills_the_window_starts_at_its_opening() -> None:
    [w] = dispatch_windows([Bucket(DUE, "email", 900_000)], 2000, TEN_MIN)  # 450 s: 2× would be 15 min
    assert w.start_utc == DUE - TEN_MIN
    assert w.fits


def test_bucket_that_cannot_fit_starts_early_enough_to_finish_by_the_slot_with_a_margin() -> None:
    bucket = Bucket(DUE, "email", 2_400_000, label="2027-05-06 07:30 Asia/Shanghai")
    [w] = dispatch_windows([bucket], 2000, TEN_MIN)  # 1,200 s of sending, and 20 % of it as margin
    assert w.start_utc == DUE - timedelta(seconds=1440)
    assert not w.fits and w.warning is not None
    assert w.warning.reason == "too_large"
    assert w.warning.message() == (
        "bucket 2027-05-06 07:30 Asia/Shanghai: 2,400,000 emails at 2,000/s need 20 min, more than the "
        "10 min window; dispatch starts 2027-05-05 23:06:00 UTC, 24 min before the slot"
    )


def test_the_issue_case_starts_a_fifth_earlier_than_it_needs() -> None:
    """20,000 at 100/s in a 10 s window started exactly n/r before the slot and 3.1 % landed late."""
    [w] = dispatch_windows([Bucket(DUE, "email", 20_000)], 100, timedelta(seconds=10))
    assert w.start_utc == DUE - timedelta(seconds=240)  # 200 s of sending + 40 s
    assert w.warning is not None and w.warning.reason == "too_large"


def test_a_bucket_that_fits_never_starts_before_its_window_for_the_margin() -> None:
    [w] = dispatch_windows([Bucket(DUE, "email", 1_100_000)], 2000, TEN_MIN)  # 550 s: 1.2× would be 660 s
    assert w.start_utc == DUE - TEN_MIN and w.fits


def test_sms_rate_per_channel() -> None:
    windows = dispatch_windows(
        [Bucket(DUE, "email", 1000), Bucket(DUE, "sms", 30_000)], {"email": 2000, "sms": 30}, TEN_MIN
    )
    by_channel = {w.channel: w for w in windows}
    assert by_channel["email"].fits
    sms = by_channel["sms"]
    assert sms.needed_s == 1000 and sms.start_utc == DUE - timedelta(seconds=1200)
    assert sms.warning is not None and "30,000 SMS at 30/s need 16 min 40 s" in sms.warning.message()


def test_buckets_of_one_channel_do_not_overlap() -> None:
    # 07:30 in UTC+8 and 07:45 in UTC+8:45 are 15 minutes apart; each needs 8 minutes at 1,000/s.
    later = DUE + timedelta(minutes=15)
    windows = dispatch_windows(
        [Bucket(DUE, "email", 480_000, "a"), Bucket(later, "email", 480_000, "b")], 1000, TEN_MIN
    )
    first, second = sorted(windows, key=lambda w: w.due_utc)
    assert second.start_utc == later - TEN_MIN  # 2 × 8 min > 10 min: the whole window
    assert first.start_utc == DUE - TEN_MIN  # finishes 23:28, before the later bucket starts 23:35
    assert first.start_utc + timedelta(seconds=first.needed_s) <= second.start_utc
    assert first.fits and second.fits


def test_contention_pushes_an_earlier_bucket_out_of_its_window() -> None:
    later = DUE + timedelta(minutes=5)
    windows = dispatch_windows(
        [Bucket(DUE, "email", 480_000, "a"), Bucket(later, "email", 480_000, "b")], 1000, TEN_MIN
    )
    first, second = sorted(windows, key=lambda w: w.due_utc)
    assert second.start_utc == later - TEN_MIN  # 23:25
    assert first.start_utc == second.start_utc - timedelta(minutes=8 * 1.2)  # finishes before b starts, with margin
    assert first.warning is not None and first.warning.reason == "shares_channel"
    assert "busy with the next bucket" in first.warning.message()


def test_now_clamps_a_start_already_past() -> None:
    now = DUE + timedelta(minutes=5)  # a late bucket inside its grace
    [w] = dispatch_windows([Bucket(DUE, "email", 6000, "late one")], 2000, TEN_MIN, now=now)
    assert w.start_utc == now
    assert w.warning is not None and w.warning.reason == "behind"
    assert "finish 5 min 3 s after the slot" in w.warning.message()


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="above 0"):
        dispatch_windows([Bucket(DUE, "email", 1)], 0, TEN_MIN)


def test_empty_buckets_are_ignored() -> None:
    assert dispatch_windows([Bucket(DUE, "email", 0)], 10, TEN_MIN) == []


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.2, "1 s"), (60, "60 s"), (600, "10 min"), (1000, "16 min 40 s"), (6000, "1 h 40 min")]
)
def test_human_seconds(seconds: float, text: str) -> None:
    assert human_seconds(seconds) == text
