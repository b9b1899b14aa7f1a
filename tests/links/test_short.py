"""Short click codes (``/s/{code}``): fixed 26 characters, 48-bit MAC, purpose-separated, key rotation."""

from __future__ import annotations

import base64
import itertools

import pytest

from topslot.links import short
from topslot.links.keys import Keyring
from topslot.links.short import (
    MAX_SHORT_DELIVERY_ID,
    SHORT_CODE_CHARS,
    key_selector,
    placeholder_code,
    sign_short,
    verify_short,
)
from topslot.links.tokens import PURPOSE as TOKEN_PURPOSE
from topslot.links.tokens import BadSignature, MalformedToken, TokenError, UnknownKey, sign

LINK = "0123456789abcdef"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"k2026": b"short-link-test-key-0123456789"})


@pytest.mark.parametrize("delivery_id", [0, 1, 127, 128, 2**28, 123_456_789_012, MAX_SHORT_DELIVERY_ID])
@pytest.mark.parametrize("link", [LINK, "0" * 16, "f" * 16])
def test_a_code_is_26_characters_and_round_trips(keyring: Keyring, delivery_id: int, link: str) -> None:
    code = sign_short(keyring, delivery_id, link)
    assert len(code) == SHORT_CODE_CHARS and set(code) <= set(ALPHABET)
    claims = verify_short(code, keyring)
    assert (claims.kind, claims.delivery_id, claims.link_key, claims.key_id) == ("click", delivery_id, link, "k2026")
    assert sign_short(keyring, delivery_id, link) == code  # deterministic


def test_the_layout_leaves_48_bits_of_mac() -> None:
    assert short.SELECTOR_BITS + short.DELIVERY_BITS + short.LINK_BITS + short.MAC_BITS == 6 * SHORT_CODE_CHARS
    assert short.MAC_BITS >= 48 and short.PURPOSE != TOKEN_PURPOSE


def test_every_altered_character_is_refused(keyring: Keyring) -> None:
    code = sign_short(keyring, 987_654, LINK)
    for i, c in itertools.product(range(SHORT_CODE_CHARS), ALPHABET):
        if c != code[i]:
            with pytest.raises(TokenError):
                verify_short(code[:i] + c + code[i + 1 :], keyring)


@pytest.mark.parametrize(
    "bad", ["", "A" * 25, "A" * 27, "A" * 25 + "=", "A" * 25 + ".", "A" * 25 + "\n", "A" * 26 + "\n", None, 5]
)
def test_anything_but_26_base64url_characters_is_malformed(keyring: Keyring, bad: object) -> None:
    with pytest.raises(MalformedToken):
        verify_short(bad, keyring)  # type: ignore[arg-type]


def test_a_mac_made_for_another_purpose_never_verifies(keyring: Keyring) -> None:
    """The same fields MACed under the click-token purpose, packed like a short code: refused."""
    kid = keyring.active_id
    body = short._body(key_selector(kid), 42, int(LINK, 16))
    forged_mac = int.from_bytes(keyring.mac(kid, TOKEN_PURPOSE, body)[:6], "big")
    value = (int.from_bytes(body, "big") << 48) | forged_mac
    forged = base64.urlsafe_b64encode(value.to_bytes(21, "big")).decode()[2:]
    assert verify_short(sign_short(keyring, 42, LINK), keyring).delivery_id == 42
    with pytest.raises(BadSignature):
        verify_short(forged, keyring)
    with pytest.raises(MalformedToken):  # and a click token is no short code
        verify_short(sign(keyring, "click", 42, LINK), keyring)


def test_key_rotation_and_unknown_keys() -> None:
    old, new = b"old-key-0123456789abcdef", b"new-key-0123456789abcdef"
    assert key_selector("k2026") != key_selector("k2027")
    before = Keyring({"k2026": old})
    both = Keyring({"k2026": old, "k2027": new}, active="k2027")
    after = Keyring({"k2027": new})
    code = sign_short(before, 7, LINK)
    assert verify_short(code, both).key_id == "k2026"  # the old key still verifies
    assert verify_short(sign_short(both, 7, LINK), after).key_id == "k2027"
    with pytest.raises(UnknownKey):
        verify_short(code, after)  # removed: its codes stop working
    same_id_other_key = Keyring({"k2026": b"someone-elses-key-0123456789"})
    with pytest.raises(BadSignature):
        verify_short(code, same_id_other_key)


def test_keys_sharing_a_selector_are_each_tried() -> None:
    ids = [f"k{i}" for i in range(64)]
    a, b = next((x, y) for x, y in itertools.combinations(ids, 2) if key_selector(x) == key_selector(y))
    ring = Keyring({a: b"first-key-0123456789abc", b: b"second-key-0123456789ab"}, active=a)
    for kid in (a, b):
        assert verify_short(sign_short(ring, 99, LINK, key_id=kid), ring).key_id == kid


@pytest.mark.parametrize("delivery_id", [-1, MAX_SHORT_DELIVERY_ID + 1, 1.0, "5", True])
def test_delivery_ids_outside_40_bits_are_refused(keyring: Keyring, delivery_id: object) -> None:
    with pytest.raises(ValueError, match="delivery id"):
        sign_short(keyring, delivery_id, LINK)  # type: ignore[arg-type]


@pytest.mark.parametrize("link", ["0123456789ABCDEF", "0x23456789abcdef", "0123456789abcde", "1234_678_9abcdef", None])
def test_link_keys_must_be_16_lower_case_hex_digits(keyring: Keyring, link: object) -> None:
    with pytest.raises(ValueError, match="link key"):
        sign_short(keyring, 1, link)  # type: ignore[arg-type]


def test_unknown_signing_key_id(keyring: Keyring) -> None:
    with pytest.raises(ValueError, match="not in the keyring"):
        sign_short(keyring, 1, LINK, key_id="nope")


def test_the_placeholder_is_code_shaped_and_never_valid(keyring: Keyring) -> None:
    code = placeholder_code("preview")
    assert code == "preview" + "0" * 19 and len(code) == SHORT_CODE_CHARS
    with pytest.raises(TokenError):
        verify_short(code, keyring)
