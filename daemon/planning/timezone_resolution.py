"""Which time zone a contact lives in, and how we know it (``tz_source``)."""

from __future__ import annotations

from typing import Literal

from topslot.campaign import Schedule
from topslot.planning.zones import is_zone, single_zone_for_country, zone_for_phone

TzSource = Literal["contact", "phone", "country", "country_center", "fallback", "campaign"]


def resolve_timezone(
    contact_tz: str | None,
    phone_e164: str | None,
    country: str | None,
    schedule: Schedule,
    default_tz: str,
) -> tuple[str, TzSource]:
    """The zone to plan a contact's slots in, with where it came from.

    A campaign with a fixed ``schedule.timezone`` uses it for everyone (``campaign``). Otherwise,
    first match wins: the contact's own valid IANA zone (``contact``); the single zone of the phone
    number's prefix (``phone``); the single zone of the contact's country (``country``); the
    campaign's ``fallback_timezone``, else the process default (``fallback``).
    """
    if schedule.timezone != "recipient":
        return schedule.timezone, "campaign"
    return recipient_zone(contact_tz, phone_e164, country, schedule.fallback_timezone or default_tz)


def recipient_zone(
    contact_tz: str | None, phone_e164: str | None, country: str | None, fallback: str
) -> tuple[str, TzSource]:
    """Where the recipient lives, whatever zone a campaign plans in (``resolve_timezone`` without
    a fixed campaign zone): contact, phone, country, else ``fallback``."""
    if contact_tz and is_zone(contact_tz):
        return contact_tz, "contact"
    zone = zone_for_phone(phone_e164)
    if zone is not None:
        return zone, "phone"
    if country:
        zone = single_zone_for_country(country)
        if zone is not None:
            return zone, "country"
    return fallback, "fallback"
