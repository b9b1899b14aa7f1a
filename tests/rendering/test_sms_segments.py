"""SMS segment counting: GSM-7 160/153, UCS-2 70/67, two-unit characters never split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topslot.rendering.sms_segments import GSM7_BASIC, GSM7_EXTENDED, SmsSegments, sms_segments


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2),
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),  # the escape pair is not split: 152 | 2+151 | 1
        ("Ça coute 5 £ à Zoé", "GSM-7", 18, 1),
        ("Ça coûte", "UCS-2", 8, 1),  # û is not in the GSM alphabet
        ("母" * 70, "UCS-2", 70, 1),
        ("母" * 71, "UCS-2", 71, 2),
        ("母" * 134, "UCS-2", 134, 2),
        ("母" * 135, "UCS-2", 135, 3),
        ("a" * 69 + "ç", "UCS-2", 70, 1),  # ç (small c cedilla) is not GSM-7; Ç is
        ("🎁" * 35, "UCS-2", 70, 1),  # surrogate pairs count twice
        ("a" * 66 + "🎁" + "a", "UCS-2", 69, 1),
        ("a" * 66 + "🎁" + "a" * 5, "UCS-2", 73, 2),
    ],
)
def test_segments(text: str, encoding: str, units: int, segments: int) -> None:
    count = sms_segments(text)
    assert (count.encoding, count.units, count.segments) == (encoding, units, segments)


def _counted_one_by_one(text: str) -> SmsSegments:
    """The count character by character, as the first version did (the reference for the fast paths)."""
    gsm7 = all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)
    if gsm7:
        sizes = [2 if c in GSM7_EXTENDED else 1 for c in text]
        single, part, encoding = 160, 153, "GSM-7"
    else:
        sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, part, encoding = 70, 67, "UCS-2"
    units = sum(sizes)
    if units <= single:
        return SmsSegments(encoding, units, 1 if units else 0, single)
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return SmsSegments(encoding, units, segments, part)


_ALPHABETS = st.sampled_from(
    [sorted(GSM7_BASIC), sorted(GSM7_BASIC | GSM7_EXTENDED), sorted(GSM7_BASIC) + ["母", "ç"], ["a", "🎁", "母", "€"]]
)


@given(_ALPHABETS.flatmap(lambda chars: st.text(alphabet=st.sampled_from(chars), max_size=700)))
def test_the_fast_paths_count_as_character_by_character(text: str) -> None:
    assert sms_segments(text) == _counted_one_by_one(text)
