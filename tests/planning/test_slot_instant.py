"""Slot instants are the exact local wall time on their date in every zone, DST days included."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topslot.planning.slot_instant import local_slot_instant, parse_slot

ALL_ZONES = sorted(zoneinfo.available_timezones())
DAYS_2026_2027 = [date(2026, 1, 1) + timedelta(days=i) for i in range(730)]


def assert_slot_instant(day: date, slot: str, zone: str, instant: datetime) -> None:
    """Independent check: the wall time round-trips, or it fell in a gap and we are at the gap's end."""
    tz = ZoneInfo(zone)
    wall = datetime.combine(day, parse_slot(slot))
    assert instant.utcoffset() == timedelta(0)
    local = instant.astimezone(tz).replace(tzinfo=None)
    if local == wall:
        # Ambiguous wall time: we must hold the first of its two occurrences.
        other = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        if other != instant and other.astimezone(tz).replace(tzinfo=None) == wall:
            assert instant < other, f"{zone} {day} {slot}: second occurrence chosen"
        return
    # Otherwise the wall time must not exist, and we are the first instant after the jump.
    just_before = (instant - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
    assert just_before < wall < local, f"{zone} {day} {slot}: {instant} shows {local}, not {wall}"


@settings(max_examples=3000, deadline=None)
@given(
    zone=st.sampled_from(ALL_ZONES),
    day=st.sampled_from(DAYS_2026_2027),
    slot=st.sampled_from(["07:30", "17:00"]),
)
def test_office_slots_are_exact_in_every_zone(zone: str, day: date, slot: str) -> None:
    instant = local_slot_instant(day, slot, zone)
    assert_slot_instant(day, slot, zone, instant)
    # 07:30 and 17:00 exist everywhere in 2026–2027: always the exact wall time.
    assert instant.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M") == f"{day} {slot}"


@settings(max_examples=3000, deadline=None)
@given(
    zone=st.sampled_from(ALL_ZONES),
    day=st.sampled_from(DAYS_2026_2027),
    hour=st.integers(0, 23),
    minute=st.sampled_from([0, 15, 30, 45, 59]),
)
def test_any_slot_is_exact_or_moved_past_the_gap(zone: str, day: date, hour: int, minute: int) -> None:
    slot = f"{hour:02d}:{minute:02d}"
    assert_slot_instant(day, slot, zone, local_slot_instant(day, slot, zone))


def test_every_zone_every_day_of_2026_and_2027() -> None:
    checked = 0
    for zone in ALL_ZONES:
        tz = ZoneInfo(zone)
        for day in DAYS_2026_2027:
            for slot in ("07:30", "17:00"):
                instant = local_slot_instant(day, slot, tz)
                assert instant.astimezone(tz).strftime("%Y-%m-%d %H:%M") == f"{day} {slot}", (zone, day, slot)
                checked += 1
    assert checked == len(ALL_ZONES) * 730 * 2


@pytest.mark.parametrize(
    ("zone", "day", "slot", "utc", "offset"),
    [
        # New York springs forward at 02:00 on 2026-03-08: 07:30 is EDT (UTC−4), the day is 23 h long.
        ("America/New_York", date(2026, 3, 7), "07:30", datetime(2026, 3, 7, 12, 30), "-0500"),
        ("America/New_York", date(2026, 3, 8), "07:30", datetime(2026, 3, 8, 11, 30), "-0400"),
        ("America/New_York", date(2026, 3, 8), "17:00", datetime(2026, 3, 8, 21, 0), "-0400"),
        # ... and falls back on 2026-11-01: 07:30 is EST again, the day is 25 h long.
        ("America/New_York", date(2026, 10, 31), "07:30", datetime(2026, 10, 31, 11, 30), "-0400"),
        ("America/New_York", date(2026, 11, 1), "07:30", datetime(2026, 11, 1, 12, 30), "-0500"),
        # London goes to BST at 01:00 UTC on 2026-03-29.
        ("Europe/London", date(2026, 3, 28), "07:30", datetime(2026, 3, 28, 7, 30), "+0000"),
        ("Europe/London", date(2026, 3, 29), "07:30", datetime(2026, 3, 29, 6, 30), "+0100"),
        # Lord Howe shifts by 30 minutes: +10:30 in winter, +11:00 in summer (from 2026-10-04).
        ("Australia/Lord_Howe", date(2026, 10, 3), "07:30", datetime(2026, 10, 2, 21, 0), "+1030"),
        ("Australia/Lord_Howe", date(2026, 10, 4), "07:30", datetime(2026, 10, 3, 20, 30), "+1100"),
        ("Australia/Lord_Howe", date(2026, 4, 5), "17:00", datetime(2026, 4, 5, 6, 30), "+1030"),
        # Shanghai has no DST.
        ("Asia/Shanghai", date(2026, 3, 8), "07:30", datetime(2026, 3, 7, 23, 30), "+0800"),
        ("Asia/Shanghai", date(2026, 11, 1), "17:00", datetime(2026, 11, 1, 9, 0), "+0800"),
    ],
)
def test_dst_fixtures(zone: str, day: date, slot: str, utc: datetime, offset: str) -> None:
    instant = local_slot_instant(day, slot, zone)
    assert instant == utc.replace(tzinfo=UTC)
    assert instant.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %z") == f"{day} {slot} {offset}"


def test_slot_is_never_previous_slot_plus_24_hours() -> None:
    saturday = local_slot_instant(date(2026, 3, 7), "07:30", "America/New_York")
    sunday = local_slot_instant(date(2026, 3, 8), "07:30", "America/New_York")
    assert sunday - saturday == timedelta(hours=23)
    monday = local_slot_instant(date(2026, 11, 2), "07:30", "America/New_York")
    sunday_fall = local_slot_instant(date(2026, 11, 1), "07:30", "America/New_York")
    saturday_fall = local_slot_instant(date(2026, 10, 31), "07:30", "America/New_York")
    assert sunday_fall - saturday_fall == timedelta(hours=25)
    assert monday - sunday_fall == timedelta(hours=24)


@pytest.mark.parametrize(
    ("zone", "day", "slot", "expected_utc", "expected_local"),
    [
        # 02:30 does not exist on these days: moved to the moment the clocks jump.
        ("America/New_York", date(2026, 3, 8), "02:30", datetime(2026, 3, 8, 7, 0), "03:00 -0400"),
        ("Europe/Berlin", date(2026, 3, 29), "02:30", datetime(2026, 3, 29, 1, 0), "03:00 +0200"),
        ("Europe/London", date(2026, 3, 29), "01:30", datetime(2026, 3, 29, 1, 0), "02:00 +0100"),
        # Lord Howe skips 02:00–02:30 only.
        ("Australia/Lord_Howe", date(2026, 10, 4), "02:15", datetime(2026, 10, 3, 15, 30), "02:30 +1100"),
        ("Australia/Lord_Howe", date(2026, 10, 4), "02:30", datetime(2026, 10, 3, 15, 30), "02:30 +1100"),
    ],
)
def test_nonexistent_wall_time_moves_to_end_of_gap(
    zone: str, day: date, slot: str, expected_utc: datetime, expected_local: str
) -> None:
    instant = local_slot_instant(day, slot, zone)
    assert instant == expected_utc.replace(tzinfo=UTC)
    assert instant.astimezone(ZoneInfo(zone)).strftime("%H:%M %z") == expected_local


@pytest.mark.parametrize(
    ("zone", "day", "slot", "first_utc"),
    [
        # 01:30 happens twice in New York on 2026-11-01: EDT first.
        ("America/New_York", date(2026, 11, 1), "01:30", datetime(2026, 11, 1, 5, 30)),
        ("Europe/London", date(2026, 10, 25), "01:30", datetime(2026, 10, 25, 0, 30)),
        # Lord Howe repeats 01:30–02:00 on 2026-04-05: +11:00 first.
        ("Australia/Lord_Howe", date(2026, 4, 5), "01:45", datetime(2026, 4, 4, 14, 45)),
    ],
)
def test_ambiguous_wall_time_uses_first_occurrence(zone: str, day: date, slot: str, first_utc: datetime) -> None:
    instant = local_slot_instant(day, slot, zone)
    assert instant == first_utc.replace(tzinfo=UTC)
    later = instant + (timedelta(minutes=30) if zone == "Australia/Lord_Howe" else timedelta(hours=1))
    assert later.astimezone(ZoneInfo(zone)).strftime("%H:%M") == slot  # the second occurrence exists too
