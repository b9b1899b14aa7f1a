"""SMS segment counting: GSM-7 160/153, UCS-2 70/67, two-unit characters never split."""

from __future__ import annotations

import pytest

from topslot.rendering.sms_segments import sms_segments


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
