"""The UTC instant of a local wall-clock slot ("07:30" on a date in a zone), DST-exact."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

_SECOND = timedelta(seconds=1)


@lru_cache(maxsize=4096)
def zone_info(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=256)
def parse_slot(slot: str) -> time:
    """``"07:30"`` → ``time(7, 30)``."""
    hours, minutes = slot.split(":")
    return time(int(hours), int(minutes))


def local_slot_instant(day: date, slot: str, zone: str | ZoneInfo) -> datetime:
    """The aware UTC instant at which the local clock in ``zone`` shows ``slot`` on ``day``.

    Built from the wall time on that very date, never by adding 24 h to another slot.
    - An ambiguous wall time (the repeated hour when clocks go back) is its first occurrence (fold=0).
    - A wall time that does not exist (the hour skipped when clocks go forward) moves forward to the
      first valid instant after the gap, i.e. the moment the clocks jump (02:30 → 03:00).
    Detection is a round trip: UTC → local must give back the same wall time.
    """
    tz = zone_info(zone) if isinstance(zone, str) else zone
    wall = datetime.combine(day, parse_slot(slot))
    instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    return _end_of_gap(wall, tz)


def _end_of_gap(wall: datetime, tz: ZoneInfo) -> datetime:
    """First instant after the gap that swallowed ``wall``: the transition itself (whole seconds)."""
    # fold=0 reads the wall time with the offset in force before the gap, fold=1 with the one after;
    # the transition lies between the two readings.
    before = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    after = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = min(before, after), max(before, after)
    # Invariant: local(low) is before the gap (< wall), local(high) is after it (> wall).
    while high - low > _SECOND:
        mid = low + (high - low) // 2
        mid = mid.replace(microsecond=0)
        if mid <= low:
            mid = low + _SECOND
        if mid.astimezone(tz).replace(tzinfo=None) < wall:
            low = mid
        else:
            high = mid
    return high


def slot_local_time(instant: datetime, zone: str | ZoneInfo) -> datetime:
    """The aware local time (in ``zone``) of a UTC instant."""
    tz = zone_info(zone) if isinstance(zone, str) else zone
    return instant.astimezone(tz)
