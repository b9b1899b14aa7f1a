"""Validators for single imported values. Each returns the clean value or raises ``ValueError``
with a message meant for the person who wrote the file."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from importlib import resources
from typing import Any
from zoneinfo import available_timezones

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from topslot.imports.limits import MAX_AMOUNT

_TRUE = {"yes", "y", "true", "t", "granted", "1", "opt-in", "optin"}
_FALSE = {"no", "n", "false", "f", "denied", "0", "opt-out", "optout", "revoked"}
_GENDERS = {
    "female": "female", "f": "female", "woman": "female", "w": "female", "女": "female",
    "male": "male", "m": "male", "man": "male", "男": "male",
    "other": "other", "o": "other", "x": "other", "diverse": "other", "d": "other",
    "non-binary": "other", "nonbinary": "other", "non_binary": "other",
    "unknown": "unknown", "u": "unknown", "prefer not to say": "unknown",
}  # fmt: skip
_LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
_INT_RE = re.compile(r"^-?(?:0|[1-9]\d{0,14})$")
_FLOAT_RE = re.compile(r"^-?(?:0|[1-9]\d{0,14})\.\d{1,15}$")
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}$")


# ---------------------------------------------------------------- JSON types

TEXT, NUMBER, YES_NO = "text", "a number", "yes/no"
_FITS: dict[str, Callable[[Any], bool]] = {  # what a JSON value may be besides text (and null)
    TEXT: lambda v: isinstance(v, int) and not isinstance(v, bool),  # ids and phone numbers as numbers
    NUMBER: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    YES_NO: lambda v: isinstance(v, bool | int),
}


def json_type(value: Any) -> str:
    """How a JSON value is named in messages."""
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, int):
        return "a whole number"
    return "text" if isinstance(value, str) else "null"


def json_type_problem(value: Any, name: str, expected: str) -> str | None:
    """Why the JSON ``value`` of column ``name`` is not ``expected`` (TEXT, NUMBER or YES_NO), or
    None. Text and null always fit (the column's own check reads the text)."""
    if value is None or isinstance(value, str) or _FITS[expected](value):
        return None
    return f"{name} must be {expected}, not {json_type(value)}"


# ---------------------------------------------------------------- single values


def shown(value: Any, limit: int = 20) -> str:
    """``value`` as text for a message, cut after ``limit`` characters."""
    text = str(value).strip()
    return text if len(text) <= limit else text[:limit] + "..."


def text(value: Any) -> str | None:
    """Blank → None; numbers (JSON) → their text; anything else stripped."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    value = str(value).strip()
    return value or None


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_EMAIL = re.compile(rf"^({_ATEXT}(?:\.{_ATEXT})*)@([A-Za-z0-9.-]+)$")
MAX_LOCAL_PART = 64
MAX_EMAIL = 254


@lru_cache(maxsize=4096)
def _email_domain(domain: str) -> str | None:
    """The normalised domain, or None if email-validator refuses it (checked once per domain)."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def email(value: str) -> str:
    """Validated and normalised by email-validator. Plain ASCII addresses (the vast majority) take a
    fast path with the same result: the dot-atom local part unchanged, the domain validated once."""
    plain = _PLAIN_EMAIL.match(value)
    if plain and len(plain.group(1)) <= MAX_LOCAL_PART and len(value) <= MAX_EMAIL:
        domain = _email_domain(plain.group(2))
        if domain is not None:
            return f"{plain.group(1)}@{domain}"
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"email {value!r} is not valid: {exc}") from None


def phone(value: str, region: str | None) -> str:
    """Any written form → E.164, reading national numbers in ``region``."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise ValueError(f"phone {value!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        where = f" (read in {region})" if region and not value.lstrip().startswith("+") else ""
        raise ValueError(f"phone {value!r} is not a valid number{where}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@cache
def country_codes() -> frozenset[str]:
    """ISO 3166 alpha-2 codes, from the tzdata package's iso3166.tab."""
    table = resources.files("tzdata").joinpath("zoneinfo", "iso3166.tab").read_text(encoding="utf-8")
    codes = {line.split("\t", 1)[0] for line in table.splitlines() if line and not line.startswith("#")}
    return frozenset(codes) | frozenset(phonenumbers.SUPPORTED_REGIONS)


def country(value: str) -> str:
    code = value.strip().upper()
    if code not in country_codes():
        raise ValueError(f"country {value!r} is not an ISO 3166 alpha-2 code such as 'CN' or 'US'")
    return code


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def timezone(value: str) -> str:
    if value not in _zones():
        raise ValueError(f"timezone {value!r} is not an IANA time zone such as 'Asia/Shanghai'")
    return value


def gender(value: str) -> str:
    found = _GENDERS.get(value.strip().lower())
    if found is None:
        raise ValueError(f"gender {value!r} is not one of female, male, other, unknown")
    return found


def locale(value: str) -> str:
    if not _LOCALE_RE.match(value):
        raise ValueError(f"locale {value!r} is not a language tag such as 'en-US' or 'zh-CN'")
    return value.replace("_", "-")


def iso_date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a date (YYYY-MM-DD)") from None


def instant(value: str, name: str) -> datetime:
    """ISO 8601 date-time; no offset means UTC; a bare date means midnight UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an ISO 8601 time such as 2027-05-06T07:30:00+08:00") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def consent(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} {value!r} is not yes/no (yes, no, true, false, granted, denied, 1, 0)")


def integer(value: Any, name: str) -> int:
    """A whole number of at most 18 digits (more is never a count or an age)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} {value!r} is not a whole number")
    if isinstance(value, int) and value.bit_length() < 60:
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
        return int(value)
    raise ValueError(f"{name} {shown(value)!r} is not a whole number")


def amount(value: Any, name: str) -> Decimal:
    """An amount of money: a finite number between -MAX_AMOUNT and MAX_AMOUNT (``inf``, ``nan`` or
    ``1e309`` would poison every sum; more than MAX_AMOUNT is never one order)."""
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name} {shown(value)!r} is not a number") from None
    if not result.is_finite():
        raise ValueError(f"{name} {shown(value)!r} is not a finite number")
    if result > MAX_AMOUNT:
        raise ValueError(f"{name} {shown(value)!r} is above the maximum of {MAX_AMOUNT}")
    if result < -MAX_AMOUNT:
        raise ValueError(f"{name} {shown(value)!r} is below the minimum of -{MAX_AMOUNT}")
    return result


def currency(value: str) -> str:
    if not _CURRENCY_RE.match(value):
        raise ValueError(f"currency {value!r} is not a 3-letter ISO 4217 code such as 'USD'")
    return value.upper()


def attribute_value(value: Any) -> Any:
    """CSV text that looks like an int or a float becomes a number; ``0123`` stays text."""
    if isinstance(value, str):
        stripped = value.strip()
        if _INT_RE.match(stripped):
            return int(stripped)
        if _FLOAT_RE.match(stripped):
            return float(stripped)
        return stripped
    return value
