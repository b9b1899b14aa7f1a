"""What the law asks of every marketing message: for email, the sender's identity and postal address
in the message and a 「广告」/AD subject prefix for recipients in China; for SMS, the opt-out
instruction the recipient's country needs (``compliance.sms_opt_out``: "Reply STOP to opt out",
「回TD退订」 in China), added as the last line unless the body already shows it."""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from typing import Any

import phonenumbers

from topslot.settings import Compliance

SETTINGS_HINT = "set compliance.{name} in topslot.yaml (or TOPSLOT_COMPLIANCE__{env})"


@dataclass(frozen=True, slots=True)
class Footer:
    """The identity/address block appended to a campaign's emails when its templates lack it."""

    html: str  # inserted before </body> (or appended); empty when the HTML already shows both
    text: str  # appended to the text part; empty when the text already shows both


def missing_settings(compliance: Compliance) -> list[str]:
    """Messages for each required compliance setting that is empty."""
    return [
        f"compliance.{name} is required to send email: " + SETTINGS_HINT.format(name=name, env=name.upper())
        for name in ("sender_identity", "postal_address")
        if not getattr(compliance, name).strip()
    ]


def footer_for(compliance: Compliance, sample_html: str, sample_text: str) -> Footer:
    """A footer for each part whose sample rendering does not already show identity and address."""
    identity, address = compliance.sender_identity.strip(), compliance.postal_address.strip()
    shown = html.unescape(sample_html)  # the markup's text as a reader sees it (&#183; → ·)
    html_shows = identity in shown and address in shown
    text_shows = identity in sample_text and address in sample_text
    html_footer = (
        ""
        if html_shows
        else (
            '<div style="margin:0;padding:16px;font-family:Arial,Helvetica,sans-serif;font-size:12px;'
            'line-height:18px;color:#777777;text-align:center;">'
            f"{html.escape(identity)} &middot; {html.escape(address)}</div>"
        )
    )
    text_footer = "" if text_shows else f"\n-- \n{identity}\n{address}\n"
    return Footer(html_footer, text_footer)


def ad_prefixed(subject: str, prefix: str) -> str:
    """``subject`` starting with ``prefix`` (unless it already starts with it or with "AD")."""
    stripped = subject.lstrip()
    already_ad = stripped[:2].upper() == "AD" and not stripped[2:3].isalpha()
    if not prefix or stripped.startswith(prefix) or already_ad:
        return subject
    return prefix + subject


def insert_before_body_end(document: str, snippet: str) -> str:
    """``snippet`` just before the last ``</body>`` (or at the end when there is none)."""
    if not snippet:
        return document
    at = document.rfind("</body>")
    if at < 0:
        at = document.rfind("</BODY>")
    if at < 0:
        return document + snippet
    return document[:at] + snippet + document[at:]


def recipient_country(contact: Any) -> str | None:
    """The recipient's country for compliance: ``contact.country``, else the country of the phone
    number (``+86`` → CN, ``+1 312`` → US), else None (the default rules apply)."""
    country = getattr(contact, "country", None)
    if isinstance(country, str) and country.strip():
        return country.strip().upper()
    phone = getattr(contact, "phone", None)
    if not isinstance(phone, str) or not phone.strip():
        return None
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return None
    return region if region and region != "ZZ" else None


def with_opt_out(body: str, line: str) -> str:
    """``body`` with the opt-out ``line`` as its last line, unless ``line`` is empty or the body
    already shows it (compared ignoring case and spacing)."""
    if not line or shows_opt_out(body, line):
        return body
    return f"{body}\n{line}" if body else line


def shows_opt_out(body: str, line: str) -> bool:
    return _spaced(line) in " ".join(body.split()).casefold()


@functools.lru_cache(maxsize=256)
def _spaced(line: str) -> str:
    """An opt-out line as it is looked for (single spaces, case folded): a few lines, every message."""
    return " ".join(line.split()).casefold()
