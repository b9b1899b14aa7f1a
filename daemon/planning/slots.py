"""Which slots one recipient gets: eligible days × slot times, per-recipient policy, missed slots."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

from topslot.campaign import Schedule
from topslot.planning.slot_instant import local_slot_instant, slot_local_time, zone_info
from topslot.planning.workdays import DayOffReason, WorkdayCalendar

Lateness = Literal["on_time", "late", "missed"]

# When one reason must stand for a `once` recipient who got no slot at all.
_DAY_OFF_PRIORITY: tuple[DayOffReason, ...] = ("holiday", "weekend", "day_not_listed")


@dataclass(frozen=True, slots=True)
class PlannedSlot:
    slot_date: date  # local date in the recipient's zone
    slot: str  # "HH:MM" as written in the campaign
    due_utc: datetime  # aware, UTC
    local_time: datetime  # aware, in the recipient's zone
    late: bool = False  # due already passed but within the grace: send now


@dataclass(frozen=True, slots=True)
class SkippedSlot:
    slot_date: date
    slot: str
    due_utc: datetime
    local_time: datetime
    reason: str = "missed_slot"


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """One recipient's slots. Every candidate is accounted for exactly once.

    ``every_slot``: len(planned) + len(skipped) + sum(days_off) == days × slots.
    ``once``: exactly one of planned, skipped or days_off holds one item.
    """

    planned: tuple[PlannedSlot, ...] = ()
    skipped: tuple[SkippedSlot, ...] = ()  # become ledger rows (state skipped)
    days_off: dict[str, int] = field(default_factory=dict)  # counts only, no rows


def lateness(due_utc: datetime, now: datetime, grace: timedelta) -> Lateness:
    """on_time: due now or later; late: passed by at most ``grace`` (send now); missed: later than that."""
    if due_utc >= now:
        return "on_time"
    return "late" if now - due_utc <= grace else "missed"


def _dates(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def plan_slots(
    schedule: Schedule,
    zone: str,
    country: str,
    now: datetime,
    *,
    calendar: WorkdayCalendar,
) -> SlotPlan:
    """Plan one recipient in ``zone`` whose working days follow ``country``, as seen at ``now``.

    ``once``: the first eligible slot on or after ``start`` that is still usable at ``now``. A slot
    passed by at most ``missed_slot.grace`` is kept with ``late=True`` (send now). A slot passed by
    more is missed: ``then: next_slot`` moves on to the next eligible slot (if none is left the last
    missed slot is returned as skipped); ``then: skip`` drops the recipient with that slot as a
    ``missed_slot`` skip. ``every_slot``: every eligible slot from ``start`` to ``end``; missed ones
    are skipped rows whatever ``then`` says, since the next slot is planned anyway.
    """
    tz = zone_info(zone)
    grace = schedule.missed_slot.grace
    once = schedule.per_recipient == "once"
    planned: list[PlannedSlot] = []
    skipped: list[SkippedSlot] = []
    days_off: Counter[str] = Counter()
    last_missed: SkippedSlot | None = None

    for day in _dates(schedule.start, schedule.end):
        reason = calendar.day_off_reason(country, day, schedule.days)
        if reason is not None:
            days_off[reason] += len(schedule.slots)
            continue
        for slot in schedule.slots:
            due = local_slot_instant(day, slot, tz)
            state = lateness(due, now, grace)
            if state != "missed":
                planned.append(PlannedSlot(day, slot, due, slot_local_time(due, tz), late=state == "late"))
                if once:
                    return SlotPlan(planned=tuple(planned))
                continue
            missed = SkippedSlot(day, slot, due, slot_local_time(due, tz))
            if not once:
                skipped.append(missed)
            elif schedule.missed_slot.then == "skip":
                return SlotPlan(skipped=(missed,))
            else:
                last_missed = missed

    if once:
        if last_missed is not None:
            return SlotPlan(skipped=(last_missed,))
        first_off = next(r for r in _DAY_OFF_PRIORITY if days_off[r])
        return SlotPlan(days_off={first_off: 1})
    return SlotPlan(planned=tuple(planned), skipped=tuple(skipped), days_off=dict(days_off))
