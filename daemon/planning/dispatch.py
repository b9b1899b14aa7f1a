"""When each bucket's dispatch starts so that it is handed over just before its slot.

A bucket is every message of one channel due at the same UTC instant (whatever the zones). With a
channel rate of r msg/s a bucket of n messages needs n/r seconds. See docs/planning.md for why the
start is ``due − min(window, max(headroom × n/r, floor))`` and how a bucket that cannot fit is
started earlier so that it still finishes by its slot, with a margin of ``MARGIN`` × n/r.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from topslot.channel import spec_of

DEFAULT_HEADROOM = 2.0
DEFAULT_FLOOR = timedelta(seconds=60)
MARGIN = 0.2
"""A bucket that must start outside its window (too large, or its channel busy with the next bucket)
starts this share of its sending time earlier still: a throughput dip of up to 1/6 still finishes by
the slot. A bucket that fits keeps at least this margin whenever its window has room for it."""

WarningReason = Literal["too_large", "shares_channel", "behind"]


@dataclass(frozen=True, slots=True)
class Bucket:
    due_utc: datetime
    channel: str
    count: int
    label: str = ""  # what a human calls it, e.g. "2027-05-06 07:30 Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class DispatchWarning:
    """A bucket that cannot be handed over inside its window, with the numbers to say why."""

    reason: WarningReason
    label: str
    channel: str
    count: int
    rate_per_s: float
    needed_s: float
    window_s: float
    due_utc: datetime
    start_utc: datetime

    @property
    def lead_s(self) -> float:
        return (self.due_utc - self.start_utc).total_seconds()

    def message(self) -> str:
        head = (
            f"bucket {self.label or _utc(self.due_utc)}: {self.count:,} {_plural(self.channel, self.count)} "
            f"at {self.rate_per_s:,g}/s need {human_seconds(self.needed_s)}"
        )
        if self.reason == "too_large":
            why = f", more than the {human_seconds(self.window_s)} window"
        elif self.reason == "shares_channel":
            why = (
                f"; the channel is still busy with the next bucket, so they cannot all go "
                f"in the {human_seconds(self.window_s)} window"
            )
        else:
            late_by = self.needed_s - self.lead_s
            return (
                f"{head}; starting now ({_utc(self.start_utc)} UTC) they finish {human_seconds(late_by)} after the slot"
            )
        return f"{head}{why}; dispatch starts {_utc(self.start_utc)} UTC, {human_seconds(self.lead_s)} before the slot"


@dataclass(frozen=True, slots=True)
class DispatchWindow:
    due_utc: datetime
    channel: str
    count: int
    label: str
    rate_per_s: float
    needed_s: float  # count / rate
    start_utc: datetime  # hand messages to the transport from here, at rate_per_s
    window_start_utc: datetime  # due − arrive_within
    warning: DispatchWarning | None

    @property
    def fits(self) -> bool:
        return self.warning is None


def human_seconds(seconds: float) -> str:
    """60 → '60 s', 600 → '10 min', 6000 → '1 h 40 min'."""
    seconds = max(0, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def _plural(channel: str, count: int) -> str:
    spec = spec_of(channel)
    return spec.label if count == 1 else spec.plural


def _utc(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _floor_second(instant: datetime) -> datetime:
    return instant.replace(microsecond=0)


def dispatch_windows(
    buckets: Iterable[Bucket],
    rate_per_s: float | Mapping[str, float],
    arrive_within: timedelta,
    *,
    headroom: float = DEFAULT_HEADROOM,
    floor: timedelta = DEFAULT_FLOOR,
    now: datetime | None = None,
) -> list[DispatchWindow]:
    """Dispatch start for every bucket, sorted by start then channel.

    A bucket that fits starts at ``due − min(window, max(headroom × needed, floor))`` and sends at
    the channel's rate, so it is handed over inside ``[due − window, due]`` with slack left for
    retries. A bucket that needs more than its window starts at ``due − needed × (1 + MARGIN)``.
    Buckets of one channel never overlap (the rate is the channel's): walking from the latest due
    backwards, a bucket must finish before the next one starts, with the same margin when that
    pushes it out of its window. ``now`` clamps starts that are already past.
    """
    rates = rate_per_s if isinstance(rate_per_s, Mapping) else defaultdict(lambda: float(rate_per_s))
    window = arrive_within
    by_channel: dict[str, list[Bucket]] = defaultdict(list)
    for bucket in buckets:
        if bucket.count > 0:
            by_channel[bucket.channel].append(bucket)

    windows: list[DispatchWindow] = []
    for channel, group in by_channel.items():
        rate = float(rates[channel])
        if rate <= 0:
            raise ValueError(f"rate for channel '{channel}' must be above 0 messages/s")
        busy_from: datetime | None = None  # start of the next (later) bucket of this channel
        for bucket in sorted(group, key=lambda b: b.due_utc, reverse=True):
            needed = timedelta(seconds=bucket.count / rate)
            lead = min(window, max(needed * headroom, floor))
            finish_by = bucket.due_utc if busy_from is None else min(bucket.due_utc, busy_from)
            start = min(bucket.due_utc - lead, finish_by - needed)
            if needed > window or finish_by < bucket.due_utc:  # outside the window anyway: keep the margin
                start = min(start, finish_by - needed * (1 + MARGIN))
            start = _floor_second(start)
            reason: WarningReason | None = None
            if needed > window:
                reason = "too_large"
            elif start < bucket.due_utc - window:
                reason = "shares_channel"
            if now is not None and start < now:
                start = _floor_second(now)
                if start + needed > bucket.due_utc:
                    reason = reason or "behind"
            busy_from = start
            warning = None
            if reason is not None:
                warning = DispatchWarning(
                    reason=reason,
                    label=bucket.label,
                    channel=channel,
                    count=bucket.count,
                    rate_per_s=rate,
                    needed_s=needed.total_seconds(),
                    window_s=window.total_seconds(),
                    due_utc=bucket.due_utc,
                    start_utc=start,
                )
            windows.append(
                DispatchWindow(
                    due_utc=bucket.due_utc,
                    channel=channel,
                    count=bucket.count,
                    label=bucket.label,
                    rate_per_s=rate,
                    needed_s=needed.total_seconds(),
                    start_utc=start,
                    window_start_utc=bucket.due_utc - window,
                    warning=warning,
                )
            )
    windows.sort(key=lambda w: (w.start_utc, w.channel))
    return windows
