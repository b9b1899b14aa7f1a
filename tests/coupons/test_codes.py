"""Generated coupon codes: format, uniqueness, typo detection, offline authenticity."""

from __future__ import annotations

import random
import string

import pytest

from topslot.coupons import codes
from topslot.coupons.codes import (
    ALPHABET,
    CouponCodeError,
    GeneratedScheme,
    canonical,
    check_character,
    coupon_key,
    generate,
    has_valid_check,
    max_contact_id,
    verify,
)

KEY = coupon_key(b"a-signing-key-of-at-least-16-bytes")
OTHER_KEY = coupon_key(b"another-signing-key-entirely-xx")
TYPEABLE = string.ascii_uppercase + string.digits


def test_shape_prefix_alphabet_and_length() -> None:
    code = generate(KEY, "mothers-day-2027", 42, "MOM", 10)
    assert code.startswith("MOM") and len(code) == 13
    assert set(code[3:]) <= set(ALPHABET)
    assert not set("ILOU") & set(code[3:])


def test_deterministic_per_key_campaign_contact() -> None:
    a = generate(KEY, "c1", 7, "X", 10)
    assert a == generate(KEY, "c1", 7, "X", 10)
    assert a != generate(KEY, "c2", 7, "X", 10)
    assert a != generate(OTHER_KEY, "c1", 7, "X", 10)
    assert a != generate(KEY, "c1", 8, "X", 10)


@pytest.mark.slow
def test_no_collision_over_one_million_contacts() -> None:
    scheme = GeneratedScheme(KEY, "big-campaign", "BIG", 10)
    seen = {scheme.code(i) for i in range(1, 1_000_001)}
    assert len(seen) == 1_000_000  # a keyed permutation: distinct ids can never share a code


def test_the_permutation_is_a_bijection_on_a_whole_small_domain() -> None:
    perm = codes._Permutation(KEY, 16)
    images = [perm.encrypt(x) for x in range(1 << 16)]
    assert sorted(images) == list(range(1 << 16))
    assert all(perm.decrypt(y) == x for x, y in enumerate(images[:5000]))


@pytest.mark.parametrize("length", [6, 7, 9, 10, 11, 12, 16, 32])
def test_round_trip_at_every_length(length: int) -> None:
    scheme = GeneratedScheme(KEY, "c", "AB", length)
    top = max_contact_id(length)
    for contact in {1, 2, 3, top // 2, top - 1, top}:
        code = scheme.code(contact)
        assert len(code) == 2 + length
        verdict = scheme.verify(code)
        assert verdict.valid and verdict.contact_id == contact and verdict.campaign_id == "c"


def test_typing_is_forgiving() -> None:
    code = generate(KEY, "c", 12345, "MOM", 10)
    typed = " " + "-".join(code[i : i + 4] for i in range(0, len(code), 4)).lower() + " "
    sloppy = typed.replace("0", "o").replace("1", "l")
    for variant in (typed, sloppy, code.replace("O", "0")):
        verdict = verify(variant, KEY, "c", prefix="MOM")
        assert verdict.valid and verdict.contact_id == 12345, variant
    assert canonical("mom-7k2q 9x.hd") == "M0M7K2Q9XHD"


def _substitutions(code: str) -> list[str]:
    out = []
    for i in range(len(code)):
        for c in TYPEABLE:
            variant = code[:i] + c + code[i + 1 :]
            if canonical(variant) != canonical(code):
                out.append(variant)
    return out


def _transpositions(code: str) -> list[str]:
    out = []
    for i in range(len(code) - 1):
        variant = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
        if canonical(variant) != canonical(code):
            out.append(variant)
    return out


def test_check_character_catches_every_single_typo_and_adjacent_swap() -> None:
    rng = random.Random(4)
    schemes = [GeneratedScheme(KEY, "c", p, n) for p, n in (("", 10), ("MOM", 10), ("PLUSULTRA1", 32), ("Z", 6))]
    checked = 0
    for scheme in schemes:
        for contact in rng.sample(range(1, max_contact_id(scheme.length)), 25):
            code = scheme.code(contact)
            assert has_valid_check(code)
            for variant in _substitutions(code) + _transpositions(code):
                assert not has_valid_check(variant), (code, variant)
                assert not verify(variant).valid
                assert not scheme.verify(variant).valid
                checked += 1
    assert checked > 30_000


def test_check_character_of_any_text() -> None:
    for text in ("A", "HELLO", "0123456789" * 5):
        assert has_valid_check(text + check_character(text))
    assert not has_valid_check("")
    assert not has_valid_check("A*B")


def test_authenticity_needs_the_key_and_campaign() -> None:
    code = generate(KEY, "c1", 99, "MOM", 10)
    assert verify(code).valid  # check character only
    assert verify(code, KEY, "c1", prefix="MOM").valid
    assert verify(code, KEY, "c1", 99, prefix="MOM").valid
    wrong = verify(code, KEY, "c1", 98, prefix="MOM")
    assert not wrong.valid and wrong.reason.startswith("wrong_contact")
    assert verify(code, OTHER_KEY, "c1", prefix="MOM").reason.startswith("not_authentic")
    assert verify(code, KEY, "c2", prefix="MOM").reason.startswith("not_authentic")
    assert verify(code, KEY, "c1", prefix="DAD").reason.startswith("wrong_prefix")
    assert GeneratedScheme(KEY, "c1", "MOM", 12).verify(code).reason.startswith("wrong_length")
    assert verify("MOM*1234", KEY, "c1", prefix="MOM").reason.startswith("bad_character")


def test_forged_codes_with_a_valid_check_character_are_rejected() -> None:
    """Random bodies that pass the typo check: the fraction accepted matches the 2**-20 design."""
    rng = random.Random(7)
    scheme = GeneratedScheme(KEY, "c", "", 10)
    accepted = 0
    trials = 20_000
    for _ in range(trials):
        data = "".join(rng.choice(ALPHABET) for _ in range(9))
        forged = data + check_character(data)
        assert has_valid_check(forged)
        accepted += scheme.verify(forged).valid
    assert accepted <= 1  # expected 20,000 / 2**20 ≈ 0.02
    assert codes.guess_probability(10) == 2.0**-20


def test_capacity_grows_with_length_and_is_enforced() -> None:
    assert max_contact_id(9) == 2**20 - 1 and max_contact_id(10) == 2**25 - 1 and max_contact_id(12) == 2**31 - 1
    assert codes.min_length_for(1_000_000) == 9 and codes.min_length_for(2**31 - 1) == 12
    with pytest.raises(CouponCodeError, match="use length >= 10"):
        generate(KEY, "c", 2**20, "", 9)
    with pytest.raises(CouponCodeError):
        generate(KEY, "c", 0, "", 10)
    with pytest.raises(CouponCodeError):
        GeneratedScheme(KEY, "c", "bad", 10)
    shown = repr(GeneratedScheme(KEY, "c", "", 10))
    assert KEY.hex() not in shown and "b'" not in shown


def test_same_prefix_campaigns_rarely_accept_each_others_codes() -> None:
    a, b = GeneratedScheme(KEY, "spring", "SHOP", 10), GeneratedScheme(KEY, "autumn", "SHOP", 10)
    cross = sum(b.verify(a.code(i)).valid for i in range(1, 5001))
    assert cross <= 1  # about 5,000 / 2**20: give campaigns distinct prefixes all the same
