"""How many SMS segments a text costs: GSM-7 (160 characters, 153 per part when split) when every
character is in the GSM 03.38 alphabet, else UCS-2 (70, 67 per part; any Chinese character).

Characters of the GSM extension table (``^{}\\[~]|€`` and form feed) take two septets.
UCS-2 counts UTF-16 code units, so an emoji outside the BMP counts twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True, slots=True)
class SmsSegments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    per_segment: int  # capacity of one segment for this text (160/153 or 70/67)


def _class(chars: frozenset[str], *, negate: bool = False) -> re.Pattern[str]:
    return re.compile("[" + ("^" if negate else "") + "".join(re.escape(c) for c in sorted(chars)) + "]")


_NOT_BASIC = _class(GSM7_BASIC, negate=True)
_NOT_GSM7 = _class(GSM7_BASIC | GSM7_EXTENDED, negate=True)
_TWO_UNITS = re.compile("[\U00010000-\U0010ffff]")  # outside the BMP: a UTF-16 surrogate pair


def is_gsm7(text: str) -> bool:
    return _NOT_GSM7.search(text) is None  # searched in C


def sms_segments(text: str) -> SmsSegments:
    """The encoding an SMS of ``text`` needs and how many segments it is billed as (0 for "").

    A two-unit character (GSM escape pair, UTF-16 surrogate pair) is never split between parts."""
    if _NOT_BASIC.search(text) is None:  # the common cases, counted in C: one unit per character
        return _counted("GSM-7", len(text), GSM7_SINGLE, GSM7_PART)
    if is_gsm7(text):
        sizes = [2 if c in GSM7_EXTENDED else 1 for c in text]
        single, part, encoding = GSM7_SINGLE, GSM7_PART, "GSM-7"
    elif _TWO_UNITS.search(text) is None:
        return _counted("UCS-2", len(text), UCS2_SINGLE, UCS2_PART)
    else:
        sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, part, encoding = UCS2_SINGLE, UCS2_PART, "UCS-2"
    units = sum(sizes)
    if units <= single:
        return SmsSegments(encoding, units, 1 if units else 0, single)
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return SmsSegments(encoding, units, segments, part)


def _counted(encoding: str, units: int, single: int, part: int) -> SmsSegments:
    """A text of ``units`` one-unit characters: parts fill up evenly."""
    if units <= single:
        return SmsSegments(encoding, units, 1 if units else 0, single)
    return SmsSegments(encoding, units, -(-units // part), part)
