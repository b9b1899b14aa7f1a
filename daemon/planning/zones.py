"""Reference tables for time zones: which zones exist, which zone a country or a phone prefix implies.

Pure lookups over data shipped in packages (tzdata's ``zone.tab`` and libphonenumber's time-zone
prefix table); every answer is cached, because planning asks the same questions for a million contacts.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import zoneinfo
from collections import defaultdict
from collections.abc import Callable
from functools import cache, lru_cache

import phonenumbers
from phonenumbers.timezone import UNKNOWN_TIMEZONE, time_zones_for_number
from phonenumbers.tzdata import TIMEZONE_DATA

_TZDATA = importlib.resources.files("tzdata").joinpath("zoneinfo")


@cache
def available_zones() -> frozenset[str]:
    """Every IANA zone name zoneinfo can load (system tz database plus the ``tzdata`` package)."""
    return frozenset(zoneinfo.available_timezones())


def is_zone(name: str | None) -> bool:
    return bool(name) and name in available_zones()


@cache
def country_zones() -> dict[str, tuple[str, ...]]:
    """Country (ISO 3166 alpha-2) → its zones as listed by tzdata's ``zone.tab``, most populous first."""
    table: dict[str, list[str]] = defaultdict(list)
    for line in _TZDATA.joinpath("zone.tab").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        country, _coordinates, zone, *_comment = line.split("\t")
        table[country].append(zone)
    return {country: tuple(zones) for country, zones in table.items()}


@cache
def _zone_tab_names() -> frozenset[str]:
    return frozenset(zone for zones in country_zones().values() for zone in zones)


@cache
def _zone_tab_by_content() -> dict[bytes, tuple[str, ...]]:
    by_digest: dict[bytes, list[str]] = defaultdict(list)
    for zones in country_zones().values():
        for zone in zones:
            by_digest[_digest(zone)].append(zone)
    return {digest: tuple(names) for digest, names in by_digest.items()}


def _digest(zone: str) -> bytes:
    try:
        data = _TZDATA.joinpath(*zone.split("/")).read_bytes()
    except (FileNotFoundError, IsADirectoryError, OSError):
        return b""
    return hashlib.blake2b(data, digest_size=16).digest()


@lru_cache(maxsize=4096)
def canonical_zone(name: str) -> str:
    """The ``zone.tab`` name for a backward-compatible link (``Asia/Calcutta`` → ``Asia/Kolkata``).

    A name that ``zone.tab`` lists, or whose data matches no single ``zone.tab`` zone, is kept as is.
    """
    if name in _zone_tab_names():
        return name
    matches = _zone_tab_by_content().get(_digest(name), ())
    return matches[0] if len(matches) == 1 else name


@lru_cache(maxsize=1024)
def single_zone_for_country(country: str) -> str | None:
    """The one zone a whole country keeps, or None when the country spans several (or is unknown).

    tzdata's ``zone.tab`` decides first: one zone listed → that zone. Where it lists several but
    libphonenumber maps the country's entire calling code to exactly one of them (China →
    Asia/Shanghai, not Asia/Urumqi; Germany → Europe/Berlin, not Europe/Busingen), that zone is
    the country's civil time and is used.
    """
    zones = country_zones().get(country.upper(), ())
    if len(zones) == 1:
        return zones[0]
    if not zones:
        return None
    code = phonenumbers.country_code_for_region(country.upper())
    if not code or phonenumbers.region_codes_for_country_code(code) != (country.upper(),):
        return None
    whole_code = _single_real_zone(_zones_under_calling_code(str(code)))
    if whole_code is not None and canonical_zone(whole_code) in zones:
        return canonical_zone(whole_code)
    return None


@cache
def _zones_under_calling_code(code: str) -> tuple[str, ...]:
    """Every zone libphonenumber gives any number under this calling code."""
    found: set[str] = set()
    for prefix, zones in TIMEZONE_DATA.items():
        if prefix.startswith(code):
            found.update(zones)
    return tuple(sorted(found))


def _single_real_zone(zones: tuple[str, ...]) -> str | None:
    if len(zones) != 1 or zones[0] == UNKNOWN_TIMEZONE or not is_zone(zones[0]):
        return None
    return zones[0]


def is_e164(phone: str | None) -> bool:
    """'+' and 6 to 15 digits (a cheap shape check; numbers are validated at import)."""
    if not phone:
        return False
    return phone[0] == "+" and phone[1:].isascii() and phone[1:].isdigit() and 7 <= len(phone) <= 16


def _e164_digits(phone: str | None) -> str | None:
    return phone[1:] if is_e164(phone) else None  # type: ignore[index]


_MIXED = "mixed"  # the calling code's answer depends on the number: ask libphonenumber
_BLOCK_CACHE_LIMIT = 1 << 18
_block_cache: dict[str, str | None] = {}  # number block → zone
_region_cache: dict[str, str | None] = {}  # number block → region


@lru_cache(maxsize=1024)
def _calling_code(prefix: str) -> str | None:
    for length in (1, 2, 3):
        if int(prefix[:length]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return prefix[:length]
    return None


@cache
def _calling_code_answer(code: str) -> str | None:
    """One zone for every number under the code, None for no number, or _MIXED."""
    if not any(_single_real_zone(zones) for prefix, zones in TIMEZONE_DATA.items() if prefix.startswith(code)):
        return None
    every_zone = _zones_under_calling_code(code)
    if len(every_zone) == 1:
        return canonical_zone(every_zone[0])
    return _MIXED


def _number(phone_e164: str, code: str) -> phonenumbers.PhoneNumber | None:
    national = phone_e164[1 + len(code) :]
    if national and national[0] != "0":
        # E.164 already splits into calling code and national number: skip the parser.
        return phonenumbers.PhoneNumber(country_code=int(code), national_number=int(national))
    try:
        return phonenumbers.parse(phone_e164, None)
    except phonenumbers.NumberParseException:
        return None


def _exact_zone(phone_e164: str, code: str) -> str | None:
    number = _number(phone_e164, code)
    zone = _single_real_zone(tuple(time_zones_for_number(number))) if number is not None else None
    return canonical_zone(zone) if zone else None


def _exact_region(phone_e164: str, code: str) -> str | None:
    number = _number(phone_e164, code)
    region = phonenumbers.region_code_for_number(number) if number is not None else None
    return region if region and region != "001" else None


def _per_block(
    cache: dict[str, str | None], phone_e164: str, code: str, exact: Callable[[str, str], str | None]
) -> str | None:
    """``exact(phone, code)``, cached per number block (the number without its last four digits:
    libphonenumber's answers never differ within one)."""
    block = phone_e164[:-4]
    if block in cache:
        return cache[block]
    answer = exact(phone_e164, code)
    if len(cache) >= _BLOCK_CACHE_LIMIT:
        cache.clear()
    cache[block] = answer
    return answer


def zone_for_phone(phone_e164: str | None) -> str | None:
    """The zone ``phonenumbers.timezone.time_zones_for_number`` gives this E.164 number, if exactly one.

    Calling codes whose numbers all share one zone (+86, +33) or never have a single one are
    answered from the code alone. Elsewhere (+1, +7, +34, +61...) libphonenumber decides, since a
    number's type matters (a Russian mobile has no region, a landline does); its answer is cached
    per number block (the number without its last four digits), which never changes the answer.
    Numbers are expected already validated and normalised to E.164 at import.
    """
    digits = _e164_digits(phone_e164)
    if digits is None:
        return None
    code = _calling_code(digits[:3])
    if code is None:
        return None
    answer = _calling_code_answer(code)
    if answer != _MIXED:
        return answer
    return _per_block(_block_cache, phone_e164, code, _exact_zone)  # type: ignore[arg-type]


@lru_cache(maxsize=1024)
def _region_for_digits_prefix(prefix: str) -> str | None:
    code = _calling_code(prefix)
    if code is None:
        return None
    regions = tuple(r for r in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[int(code)] if r != "001")
    return regions[0] if len(regions) == 1 else None


def region_for_phone(phone_e164: str | None) -> str | None:
    """The country of an E.164 number, for its holiday calendar: the calling code's when it belongs
    to one country only (+86 → CN); on a shared code (+1, +7, +44, +61 ...) the region libphonenumber
    finds for the number itself (+1 212 → US, +1 416 → CA, +7 727 → KZ), cached per number block;
    None when it cannot tell."""
    digits = _e164_digits(phone_e164)
    if digits is None:
        return None
    single = _region_for_digits_prefix(digits[:3])
    if single is not None:
        return single
    code = _calling_code(digits[:3])
    if code is None:
        return None
    return _per_block(_region_cache, phone_e164, code, _exact_region)  # type: ignore[arg-type]


# Where a multi-zone country's people mostly live, or its middle: the zone a message timed for a
# contact known only by that country is least wrong in (``low_confidence_zone: country_center``).
_CENTERS = {
    "US": "America/Chicago",  # between the East (47 %) and the West; ±1-2 h for everybody
    "CA": "America/Toronto",
    "MX": "America/Mexico_City",
    "BR": "America/Sao_Paulo",
    "AR": "America/Argentina/Buenos_Aires",
    "CL": "America/Santiago",
    "EC": "America/Guayaquil",
    "RU": "Europe/Moscow",
    "UA": "Europe/Kyiv",
    "KZ": "Asia/Almaty",
    "ID": "Asia/Jakarta",
    "AU": "Australia/Sydney",
    "NZ": "Pacific/Auckland",
    "ES": "Europe/Madrid",
    "PT": "Europe/Lisbon",
    "CD": "Africa/Kinshasa",
    "MN": "Asia/Ulaanbaatar",
    "MY": "Asia/Kuala_Lumpur",
}


@lru_cache(maxsize=1024)
def center_zone(country: str | None) -> str | None:
    """A representative zone of a country: its one zone, else where most of its people live (a
    table of the large multi-zone countries), else the first zone ``zone.tab`` lists for it."""
    if not country:
        return None
    country = country.upper()
    single = single_zone_for_country(country)
    if single is not None:
        return single
    center = _CENTERS.get(country)
    if center is not None and is_zone(center):
        return center
    zones = country_zones().get(country, ())
    return zones[0] if zones else None
