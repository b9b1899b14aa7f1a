"""Send days: every day, weekday lists, and each country's working days (holidays, observed, swaps)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from topslot.planning.workdays import WorkdayCalendar


@pytest.fixture(scope="module")
def calendar() -> WorkdayCalendar:
    return WorkdayCalendar("US")


@pytest.mark.parametrize(
    ("day", "send", "reason"),
    [
        (date(2026, 2, 14), True, None),  # Saturday made a working day for Spring Festival
        (date(2026, 2, 28), True, None),  # Saturday made a working day
        (date(2026, 10, 10), True, None),  # Saturday made a working day for National Day
        (date(2026, 2, 16), False, "holiday"),  # Spring Festival eve
        (date(2026, 2, 23), False, "holiday"),  # Monday off, swapped for Saturday 2026-02-28
        (date(2026, 10, 5), False, "holiday"),  # Monday, National Day week
        (date(2026, 2, 15), False, "weekend"),  # an ordinary Sunday
        (date(2026, 10, 9), True, None),  # an ordinary Friday
    ],
)
def test_china_holidays_and_working_weekends(
    calendar: WorkdayCalendar, day: date, send: bool, reason: str | None
) -> None:
    assert calendar.is_send_day("CN", day, "workdays") is send
    assert calendar.day_off_reason("CN", day, "workdays") == reason


def test_china_golden_week_is_off(calendar: WorkdayCalendar) -> None:
    for offset in range(7):
        day = date(2026, 10, 1) + timedelta(days=offset)
        assert not calendar.is_send_day("CN", day, "workdays"), day


@pytest.mark.parametrize(
    ("day", "send"),
    [
        (date(2026, 7, 3), False),  # Independence Day (observed): July 4 is a Saturday
        (date(2026, 7, 4), False),
        (date(2026, 11, 26), False),  # Thanksgiving
        (date(2026, 11, 27), True),  # Black Friday is not a public holiday
        (date(2026, 7, 6), True),
    ],
)
def test_us_holidays(calendar: WorkdayCalendar, day: date, send: bool) -> None:
    assert calendar.is_send_day("US", day, "workdays") is send


def test_every_day_ignores_holidays(calendar: WorkdayCalendar) -> None:
    assert calendar.is_send_day("CN", date(2026, 10, 1), "every_day")
    assert calendar.is_send_day("US", date(2026, 7, 4), "every_day")


def test_weekday_list(calendar: WorkdayCalendar) -> None:
    days = ["tue", "thu", "sat"]
    week = [date(2026, 5, 4) + timedelta(days=i) for i in range(7)]  # Monday 2026-05-04 onwards
    assert [calendar.is_send_day("US", d, days) for d in week] == [False, True, False, True, False, True, False]
    assert calendar.day_off_reason("US", week[0], days) == "day_not_listed"
    # An explicit list is about weekdays only, holidays included.
    assert calendar.is_send_day("US", date(2026, 11, 26), ["thu"])


def test_unknown_country_falls_back(calendar: WorkdayCalendar) -> None:
    assert calendar.country_for("ZZ", None, "CN") == "CN"
    assert calendar.country_for(None, "cn", None) == "CN"
    assert calendar.country_for("ZZ", None, None) == "US"
    # With the fallback, the US calendar applies: July 3 2026 is off, CN's working Saturday is not.
    assert not calendar.is_send_day("ZZ", date(2026, 7, 3), "workdays")
    assert not calendar.is_send_day("ZZ", date(2026, 2, 14), "workdays")


def test_other_weekends_follow_the_country(calendar: WorkdayCalendar) -> None:
    # Saudi Arabia's weekend is Friday–Saturday.
    assert not calendar.is_send_day("SA", date(2026, 5, 8), "workdays")  # Friday
    assert calendar.is_send_day("SA", date(2026, 5, 10), "workdays")  # Sunday


def test_default_country_must_have_a_calendar() -> None:
    with pytest.raises(ValueError, match="no holiday calendar"):
        WorkdayCalendar("ZZ")
