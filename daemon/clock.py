"""Time as an injected dependency: pure code never calls ``datetime.now()``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to (tests, dry-run plans, the demo)."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, instant: datetime) -> None:
        self._now = instant.astimezone(UTC)


class SimulatedClock:
    """Time that starts at ``start`` and runs ``speed`` times faster than the wall clock: the demo
    (a campaign's day in a minute) and fault tests (a slot a few seconds away)."""

    def __init__(self, start: datetime, speed: float = 1.0):
        self.rebase(start, speed)

    def rebase(self, start: datetime, speed: float = 1.0) -> None:
        """Read ``start`` now, and run on from there at ``speed``."""
        if start.tzinfo is None:
            raise ValueError("SimulatedClock needs an aware datetime")
        if speed <= 0:
            raise ValueError("speed must be above 0")
        self.start = start.astimezone(UTC)
        self.speed = speed
        self._wall_start = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._wall_start) * self.speed)


def wall_seconds_until(clock: Clock, instant: datetime) -> float:
    """Real seconds until ``clock`` shows ``instant`` (negative: already past)."""
    return (instant - clock.now()).total_seconds() / getattr(clock, "speed", 1.0)


def clock_span(clock: Clock, real: timedelta) -> timedelta:
    """A real duration (a lease, a poll interval) as it reads on ``clock``."""
    return real * getattr(clock, "speed", 1.0)
