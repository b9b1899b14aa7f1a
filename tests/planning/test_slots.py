"""One recipient's slots: once vs every_slot, send days, missed-slot policies."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from topslot.campaign import Schedule
from topslot.planning.slots import lateness, plan_slots
from topslot.planning.workdays import WorkdayCalendar

CALENDAR = WorkdayCalendar("US")


def schedule(**overrides: Any) -> Schedule:
    values: dict[str, Any] = {"start": date(2027, 5, 6), "end": date(2027, 5, 9)}  # Thu..Sun
    values.update(overrides)
    return Schedule.model_validate(values)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_once_takes_first_slot_of_first_workday() -> None:
    plan = plan_slots(schedule(), "Asia/Shanghai", "CN", utc(2027, 5, 1), calendar=CALENDAR)
    assert [(p.slot_date, p.slot) for p in plan.planned] == [(date(2027, 5, 6), "07:30")]
    only = plan.planned[0]
    assert only.due_utc == utc(2027, 5, 5, 23, 30)
    assert only.local_time.isoformat() == "2027-05-06T07:30:00+08:00"
    assert not only.late and not plan.skipped and not plan.days_off


def test_every_slot_on_workdays_skips_the_weekend() -> None:
    plan = plan_slots(schedule(per_recipient="every_slot"), "Europe/Paris", "FR", utc(2027, 5, 1), calendar=CALENDAR)
    # 2027-05-06 is Ascension Day in France; 05-07 is a working Friday; 05-08 (Sat) is also VE Day.
    assert [(p.slot_date.isoformat(), p.slot) for p in plan.planned] == [
        ("2027-05-07", "07:30"),
        ("2027-05-07", "17:00"),
    ]
    assert plan.days_off == {"holiday": 4, "weekend": 2}
    assert len(plan.planned) + len(plan.skipped) + sum(plan.days_off.values()) == 4 * 2


def test_every_slot_every_day() -> None:
    plan = plan_slots(
        schedule(per_recipient="every_slot", days="every_day"),
        "America/New_York",
        "US",
        utc(2027, 5, 1),
        calendar=CALENDAR,
    )
    assert len(plan.planned) == 8
    assert all(p.local_time.strftime("%H:%M") == p.slot for p in plan.planned)


def test_weekday_list() -> None:
    plan = plan_slots(
        schedule(per_recipient="every_slot", days=["sat", "sun"], slots=["10:00"]),
        "UTC",
        "US",
        utc(2027, 5, 1),
        calendar=CALENDAR,
    )
    assert [p.slot_date.isoformat() for p in plan.planned] == ["2027-05-08", "2027-05-09"]
    assert plan.days_off == {"day_not_listed": 2}


def test_china_working_saturday_and_golden_week() -> None:
    sched = schedule(start=date(2026, 10, 1), end=date(2026, 10, 10), per_recipient="every_slot", slots=["07:30"])
    plan = plan_slots(sched, "Asia/Shanghai", "CN", utc(2026, 9, 1), calendar=CALENDAR)
    assert [p.slot_date.isoformat() for p in plan.planned] == [
        "2026-10-08",
        "2026-10-09",
        "2026-10-10",
    ]  # Thu, Fri, working Sat
    once = plan_slots(
        sched.model_copy(update={"per_recipient": "once"}), "Asia/Shanghai", "CN", utc(2026, 9, 1), calendar=CALENDAR
    )
    assert [p.slot_date.isoformat() for p in once.planned] == ["2026-10-08"]


def test_once_with_no_send_day_is_counted_not_planned() -> None:
    sched = schedule(start=date(2026, 10, 1), end=date(2026, 10, 4))  # Golden Week in China
    plan = plan_slots(sched, "Asia/Shanghai", "CN", utc(2026, 9, 1), calendar=CALENDAR)
    assert plan.planned == () and plan.skipped == ()
    assert plan.days_off == {"holiday": 1}


# ------------------------------------------------------------ missed slots

SHANGHAI_0730 = utc(2027, 5, 5, 23, 30)  # 2027-05-06 07:30 +08:00


@pytest.mark.parametrize(
    ("then", "now", "expected"),
    [
        # Within the 15-minute grace: send now, flagged late.
        ("next_slot", SHANGHAI_0730 + timedelta(minutes=15), ("planned", "2027-05-06", "07:30", True)),
        ("skip", SHANGHAI_0730 + timedelta(minutes=1), ("planned", "2027-05-06", "07:30", True)),
        # Exactly on time is not late.
        ("skip", SHANGHAI_0730, ("planned", "2027-05-06", "07:30", False)),
        # After the grace: the 07:30 email is never sent at 14:00.
        ("next_slot", SHANGHAI_0730 + timedelta(hours=6, minutes=30), ("planned", "2027-05-06", "17:00", False)),
        ("next_slot", SHANGHAI_0730 + timedelta(minutes=16), ("planned", "2027-05-06", "17:00", False)),
        ("skip", SHANGHAI_0730 + timedelta(hours=6, minutes=30), ("skipped", "2027-05-06", "07:30", False)),
    ],
)
def test_missed_slot_policy_once(then: str, now: datetime, expected: tuple[str, str, str, bool]) -> None:
    sched = schedule(missed_slot={"grace": "15m", "then": then})
    plan = plan_slots(sched, "Asia/Shanghai", "CN", now, calendar=CALENDAR)
    state, day, slot, late = expected
    if state == "planned":
        assert len(plan.planned) == 1 and not plan.skipped
        got = plan.planned[0]
        assert (got.slot_date.isoformat(), got.slot, got.late) == (day, slot, late)
    else:
        assert not plan.planned and len(plan.skipped) == 1
        got_skip = plan.skipped[0]
        assert (got_skip.slot_date.isoformat(), got_skip.slot, got_skip.reason) == (day, slot, "missed_slot")


def test_once_next_slot_moves_to_the_next_send_day() -> None:
    # Friday 2027-05-07 17:00 Shanghai missed; the weekend is off; nothing left → skipped (last missed slot).
    sched = schedule(missed_slot={"grace": "15m", "then": "next_slot"})
    plan = plan_slots(sched, "Asia/Shanghai", "CN", utc(2027, 5, 7, 12, 0), calendar=CALENDAR)
    assert not plan.planned
    assert [(s.slot_date.isoformat(), s.slot) for s in plan.skipped] == [("2027-05-07", "17:00")]
    # Earlier on Friday, the Friday 17:00 slot is still ahead.
    plan = plan_slots(sched, "Asia/Shanghai", "CN", utc(2027, 5, 6, 1, 0), calendar=CALENDAR)
    assert [(p.slot_date.isoformat(), p.slot) for p in plan.planned] == [("2027-05-06", "17:00")]


def test_every_slot_missed_slots_are_skipped_rows_whatever_the_policy() -> None:
    for then in ("next_slot", "skip"):
        sched = schedule(per_recipient="every_slot", days="every_day", missed_slot={"grace": "15m", "then": then})
        plan = plan_slots(sched, "Asia/Shanghai", "CN", utc(2027, 5, 6, 9, 5), calendar=CALENDAR)  # 17:05 local
        assert [(s.slot_date.isoformat(), s.slot) for s in plan.skipped] == [("2027-05-06", "07:30")]
        assert [(p.slot_date.isoformat(), p.slot, p.late) for p in plan.planned][:2] == [
            ("2027-05-06", "17:00", True),
            ("2027-05-07", "07:30", False),
        ]
        assert len(plan.planned) + len(plan.skipped) == 8


def test_lateness() -> None:
    due = utc(2027, 5, 6, 0, 0)
    grace = timedelta(minutes=15)
    assert lateness(due, due - timedelta(seconds=1), grace) == "on_time"
    assert lateness(due, due, grace) == "on_time"
    assert lateness(due, due + grace, grace) == "late"
    assert lateness(due, due + grace + timedelta(seconds=1), grace) == "missed"


def test_dst_day_slots_are_wall_times() -> None:
    sched = schedule(start=date(2026, 3, 7), end=date(2026, 3, 9), days="every_day", per_recipient="every_slot")
    plan = plan_slots(sched, "America/New_York", "US", utc(2026, 3, 1), calendar=CALENDAR)
    assert [p.local_time.strftime("%d %H:%M %z") for p in plan.planned] == [
        "07 07:30 -0500",
        "07 17:00 -0500",
        "08 07:30 -0400",
        "08 17:00 -0400",
        "09 07:30 -0400",
        "09 17:00 -0400",
    ]


def test_nonexistent_slot_moves_past_the_gap() -> None:
    sched = schedule(start=date(2026, 3, 8), end=date(2026, 3, 8), days="every_day", slots=["02:30"])
    plan = plan_slots(sched, "America/New_York", "US", utc(2026, 3, 1), calendar=CALENDAR)
    assert plan.planned[0].local_time.strftime("%H:%M %z") == "03:00 -0400"
    assert plan.planned[0].slot == "02:30"  # the ledger keeps the slot as written
