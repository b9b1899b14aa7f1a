"""Zone tables: countries with one zone, phone prefixes, backward-compatible names."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType
from phonenumbers.timezone import UNKNOWN_TIMEZONE, time_zones_for_number

from topslot.planning.zones import (
    canonical_zone,
    country_zones,
    is_e164,
    region_for_phone,
    single_zone_for_country,
    zone_for_phone,
)


@pytest.mark.parametrize(
    ("country", "zone"),
    [
        ("FR", "Europe/Paris"),
        ("JP", "Asia/Tokyo"),
        ("GB", "Europe/London"),
        ("IN", "Asia/Kolkata"),
        ("CN", "Asia/Shanghai"),  # zone.tab also lists Asia/Urumqi; civil time is Beijing time
        ("DE", "Europe/Berlin"),  # zone.tab also lists Europe/Busingen
        ("cn", "Asia/Shanghai"),
        ("US", None),
        ("AU", None),
        ("RU", None),
        ("ES", None),  # Canary Islands are an hour behind
        ("ZZ", None),
    ],
)
def test_single_zone_for_country(country: str, zone: str | None) -> None:
    assert single_zone_for_country(country) == zone


def test_every_single_zone_country_maps_to_its_zone() -> None:
    table = country_zones()
    assert len(table) > 240
    for country, zones in table.items():
        if len(zones) == 1:
            assert single_zone_for_country(country) == zones[0]


@pytest.mark.parametrize(
    ("phone", "zone", "region"),
    [
        ("+8613800138000", "Asia/Shanghai", "CN"),
        ("+12125551234", "America/New_York", "US"),  # +1 is shared: the number's own region decides
        ("+14155550100", "America/Los_Angeles", "US"),
        ("+14165550100", "America/Toronto", "CA"),  # Toronto: Canada's holidays, not the US's
        ("+919876543210", "Asia/Kolkata", "IN"),  # libphonenumber says Asia/Calcutta
        ("+33123456789", "Europe/Paris", "FR"),
        ("+61212345678", "Australia/Sydney", "AU"),
        ("+79123456789", None, "RU"),  # a Russian mobile: Russia, though in one of eleven zones
        ("+74951234567", "Europe/Moscow", "RU"),  # a Moscow landline
        ("+77271234567", None, "KZ"),  # +7 is Kazakhstan's too (several zones: none from the number)
        ("+34612345678", None, "ES"),  # a Spanish mobile may be in the Canaries
        ("+34912345678", "Europe/Madrid", "ES"),  # a Madrid landline
        ("12125551234", None, None),  # not E.164
        ("+1212abc", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_zone_and_region_for_phone(phone: str | None, zone: str | None, region: str | None) -> None:
    assert zone_for_phone(phone) == zone
    assert region_for_phone(phone) == region


TYPES = [
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.MOBILE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
]


def test_phone_zone_agrees_with_libphonenumber_for_every_region_and_type() -> None:
    """Our cached answer must be what time_zones_for_number gives (one real zone, else None)."""
    compared = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type in TYPES:
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is None or not phonenumbers.is_valid_number(example):
                continue
            exact = time_zones_for_number(example)
            expected = canonical_zone(exact[0]) if len(exact) == 1 and exact[0] != UNKNOWN_TIMEZONE else None
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            assert zone_for_phone(e164) == expected, (region, number_type, e164, exact)
            compared += 1
    assert compared > 600


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Asia/Calcutta", "Asia/Kolkata"),
        ("Europe/Kiev", "Europe/Kyiv"),
        ("America/Godthab", "America/Nuuk"),
        ("Asia/Shanghai", "Asia/Shanghai"),
        ("UTC", "UTC"),
    ],
)
def test_canonical_zone(name: str, canonical: str) -> None:
    assert canonical_zone(name) == canonical


def test_is_e164() -> None:
    assert is_e164("+8613800138000")
    assert not is_e164("+86 138")
    assert not is_e164("+٨٦١٣٨٠٠١٣٨٠٠٠")  # Arabic-Indic digits
    assert not is_e164("+1234567890123456")
