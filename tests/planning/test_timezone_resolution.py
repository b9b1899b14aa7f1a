"""Where each contact's zone comes from: contact, phone, country, fallback, or the campaign."""

from __future__ import annotations

from datetime import date

import pytest

from topslot.campaign import Schedule
from topslot.planning.timezone_resolution import resolve_timezone


def schedule(**overrides: object) -> Schedule:
    return Schedule(start=date(2027, 5, 6), end=date(2027, 5, 9), **overrides)


@pytest.mark.parametrize(
    ("contact_tz", "phone", "country", "fallback", "expected"),
    [
        ("Europe/Paris", "+8613800138000", "CN", "Asia/Shanghai", ("Europe/Paris", "contact")),
        ("Not/AZone", "+8613800138000", "US", None, ("Asia/Shanghai", "phone")),
        (None, "+12125551234", "US", None, ("America/New_York", "phone")),
        (None, "+79123456789", "DE", None, ("Europe/Berlin", "country")),  # phone spans zones
        (None, None, "JP", "Asia/Shanghai", ("Asia/Tokyo", "country")),
        (None, None, "US", "Asia/Shanghai", ("Asia/Shanghai", "fallback")),  # US has many zones
        (None, "garbage", "XX", "Asia/Shanghai", ("Asia/Shanghai", "fallback")),
        (None, None, None, None, ("Europe/Dublin", "fallback")),  # the settings' default
        ("", "", "", None, ("Europe/Dublin", "fallback")),
    ],
)
def test_sources(
    contact_tz: str | None, phone: str | None, country: str | None, fallback: str | None, expected: tuple[str, str]
) -> None:
    sched = schedule(fallback_timezone=fallback)
    assert resolve_timezone(contact_tz, phone, country, sched, "Europe/Dublin") == expected


def test_fixed_campaign_zone_wins_for_everyone() -> None:
    sched = schedule(timezone="America/Chicago")
    assert resolve_timezone("Asia/Tokyo", "+8613800138000", "CN", sched, "UTC") == ("America/Chicago", "campaign")
