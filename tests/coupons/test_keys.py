"""Coupon keys come from the signing keyring, one per signing key."""

from __future__ import annotations

from topslot.coupons.codes import GeneratedScheme
from topslot.coupons.keys import active_coupon_key, coupon_keys
from topslot.links.keys import Keyring


def test_one_coupon_key_per_signing_key_active_first() -> None:
    ring = Keyring({"old": b"o" * 32, "new": b"n" * 32}, active="new")
    keys = coupon_keys(ring)
    assert list(keys) == ["new", "old"] and keys["new"] == active_coupon_key(ring)
    assert keys["new"] != keys["old"] and len(keys["new"]) == 32
    # the coupon subkey is not the link-token subkey
    assert keys["new"] != ring.mac("new", "link", b"topslot-coupon")


def test_codes_made_before_a_rotation_still_verify() -> None:
    before = Keyring({"old": b"o" * 32})
    code = GeneratedScheme(active_coupon_key(before), "c", "X", 10).code(77)
    after = Keyring({"old": b"o" * 32, "new": b"n" * 32}, active="new")
    verdicts = [GeneratedScheme(k, "c", "X", 10).verify(code) for k in coupon_keys(after).values()]
    assert [v.valid for v in verdicts] == [False, True] and verdicts[1].contact_id == 77
