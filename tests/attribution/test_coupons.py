"""Typed coupon codes → campaign and contact, offline for generated codes."""

from __future__ import annotations

from topslot.attribution.coupons import CouponMatch, GeneratedDecoder, code_spellings
from topslot.coupons.codes import GeneratedScheme

from .support import make_campaign

KEY_OLD, KEY_NEW = b"o" * 32, b"n" * 32


def test_generated_codes_decode_under_any_configured_key_and_any_spelling() -> None:
    campaigns = [make_campaign(), make_campaign("other", coupon={"generate": {"prefix": "OTH", "length": 8}})]
    decoder = GeneratedDecoder(campaigns, [KEY_NEW, KEY_OLD])
    code = GeneratedScheme(KEY_OLD, "mothers-day-2027", "MOM", 10).code(1234)
    assert decoder.decode(code) == CouponMatch("mothers-day-2027", 1234, code, "generated")
    typed = code.lower().replace("0", "o")
    typed = typed[:5] + "-" + typed[5:]
    assert decoder.decode(" " + typed + " ") == CouponMatch("mothers-day-2027", 1234, code, "generated")
    other = GeneratedScheme(KEY_NEW, "other", "OTH", 8).code(7)
    assert decoder.decode(other) == CouponMatch("other", 7, other, "generated")


def test_unknown_typo_and_foreign_codes_do_not_decode() -> None:
    decoder = GeneratedDecoder([make_campaign()], [KEY_NEW])
    code = GeneratedScheme(KEY_NEW, "mothers-day-2027", "MOM", 10).code(99)
    typo = code[:4] + ("X" if code[4] != "X" else "Y") + code[5:]
    forged = GeneratedScheme(b"x" * 32, "mothers-day-2027", "MOM", 10).code(99)
    for text in (typo, forged, "SUMMER10", "", "!!", code + "0"):
        assert decoder.decode(text) is None
    assert GeneratedDecoder([make_campaign(coupon={"pool": "p"})], [KEY_NEW]).decode(code) is None


def test_spellings_to_look_up() -> None:
    assert code_spellings(" dad-0o1l ") == ["dad-0o1l", "DAD-0O1L", "DAD0O1L", "DAD0011"]
    assert code_spellings("SAVE10") == ["SAVE10"]
    assert code_spellings("a*b") == ["a*b", "A*B"]  # no canonical form
