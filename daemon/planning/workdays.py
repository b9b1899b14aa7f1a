"""Which local dates are send days: every day, a weekday list, or a country's working days."""

from __future__ import annotations

from datetime import date
from functools import cache
from typing import Literal

import holidays

from topslot.campaign import WEEKDAYS, Weekday

DaysSetting = Literal["every_day", "workdays"] | list[Weekday] | tuple[Weekday, ...]
DayOffReason = Literal["holiday", "weekend", "day_not_listed"]


@cache
def supported_countries() -> frozenset[str]:
    return frozenset(holidays.list_supported_countries())


class WorkdayCalendar:
    """Public holidays and working weekends per country, via the ``holidays`` package.

    ``workdays`` follows ``HolidayBase.is_working_day``: a weekend day is a send day only when the
    country makes it a working day (China's substituted Saturdays such as 2026-02-14); any other day
    is a send day unless it is a public holiday, including observed days (the US Friday 2026-07-03)
    and China's substituted days off. Holiday tables are built once per (country, year).
    """

    def __init__(self, default_country: str):
        if default_country.upper() not in supported_countries():
            raise ValueError(f"default country '{default_country}' has no holiday calendar")
        self.default_country = default_country.upper()
        self._tables: dict[tuple[str, int], holidays.HolidayBase] = {}

    def country_for(self, *candidates: str | None) -> str:
        """The first candidate country that has a holiday calendar, else the default country."""
        for country in candidates:
            if country and country.upper() in supported_countries():
                return country.upper()
        return self.default_country

    def _table(self, country: str, year: int) -> holidays.HolidayBase:
        key = (country, year)
        table = self._tables.get(key)
        if table is None:
            table = holidays.country_holidays(country, years=year)
            self._tables[key] = table
        return table

    def day_off_reason(self, country: str, day: date, days: DaysSetting) -> DayOffReason | None:
        """None when ``day`` is a send day in ``country``; otherwise why it is not."""
        if days == "every_day":
            return None
        if days != "workdays":
            return None if WEEKDAYS[day.weekday()] in days else "day_not_listed"
        table = self._table(self.country_for(country), day.year)
        if table.is_working_day(day):
            return None
        return "holiday" if day in table else "weekend"

    def is_send_day(self, country: str, day: date, days: DaysSetting) -> bool:
        return self.day_off_reason(country, day, days) is None

    def holiday_name(self, country: str, day: date) -> str | None:
        return self._table(self.country_for(country), day.year).get(day)
