from __future__ import annotations

import base64
import hmac
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topslot.links import tokens
from topslot.links.keys import Keyring
from topslot.links.tokens import (
    MAC_BYTES,
    MAX_DELIVERY_ID,
    PURPOSE,
    BadSignature,
    MalformedToken,
    Signer,
    TokenClaims,
    TokenError,
    UnknownKey,
    WrongKind,
    sign,
    verify,
)

KEY_A = b"a-test-key-that-is-long-enough-0001"
KEY_B = b"b-test-key-that-is-long-enough-0002"
LINK = "00112233445566ff"
ALPHABET = string.ascii_letters + string.digits + "-_"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"k1": KEY_A})


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def signed_raw(keyring: Keyring, body: bytes, key_id: str = "k1") -> str:
    """A token with a genuine MAC over an arbitrary body (to test what the parser accepts)."""
    return b64(body + keyring.mac(key_id, PURPOSE, body)[:MAC_BYTES])


@pytest.mark.parametrize("delivery_id", [0, 1, 127, 128, 16_383, 16_384, 2**32 + 5, MAX_DELIVERY_ID])
@pytest.mark.parametrize(("kind", "link"), [("click", LINK), ("open", None), ("unsubscribe", None)])
def test_round_trip(keyring: Keyring, kind: str, link: str | None, delivery_id: int) -> None:
    token = sign(keyring, kind, delivery_id, link)

    assert verify(token, keyring) == TokenClaims(kind, delivery_id, link, "k1")
    assert verify(token, keyring, kind).delivery_id == delivery_id
    assert set(token) <= set(ALPHABET) and "=" not in token


@given(delivery_id=st.integers(0, MAX_DELIVERY_ID), link=st.binary(min_size=8, max_size=8))
def test_round_trip_property(delivery_id: int, link: bytes) -> None:
    keyring = Keyring({"k1": KEY_A})
    token = sign(keyring, "click", delivery_id, link.hex())
    assert verify(token, keyring, "click") == TokenClaims("click", delivery_id, link.hex(), "k1")


def test_tokens_are_compact_and_deterministic(keyring: Keyring) -> None:
    click = sign(keyring, "click", 123_456_789, LINK)
    assert click == sign(keyring, "click", 123_456_789, LINK)
    assert len(click) <= 43 and len(sign(keyring, "unsubscribe", 123_456_789)) <= 32
    longest = sign(Keyring({"k" * 12: KEY_A}), "click", MAX_DELIVERY_ID, LINK)
    assert len(longest) == 59 <= tokens.MAX_TOKEN_CHARS


def test_mac_is_at_least_96_bits_and_compared_in_constant_time(
    keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MAC_BYTES * 8 >= 96
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    verify(sign(keyring, "open", 7), keyring)
    assert len(calls) == 1 and len(calls[0][0]) == MAC_BYTES


@pytest.mark.parametrize(("kind", "link"), [("click", LINK), ("open", None), ("unsubscribe", None)])
def test_every_single_bit_flip_is_refused(keyring: Keyring, kind: str, link: str | None) -> None:
    raw = unb64(sign(keyring, kind, 987_654, link))
    for i in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            with pytest.raises(TokenError):
                verify(b64(bytes(flipped)), keyring)


def test_every_single_character_change_is_refused(keyring: Keyring) -> None:
    token = sign(keyring, "click", 42, LINK)
    for i, original in enumerate(token):
        for char in ALPHABET:
            if char != original:
                with pytest.raises(TokenError):
                    verify(token[:i] + char + token[i + 1 :], keyring)


def test_truncated_and_extended_tokens_are_refused(keyring: Keyring) -> None:
    token = sign(keyring, "click", 42, LINK)
    for end in range(len(token)):
        with pytest.raises(MalformedToken):
            verify(token[:end], keyring)
    for extra in ("A", "AA", "AAAA", "_-_-"):
        with pytest.raises(TokenError):
            verify(token + extra, keyring)


def test_swapping_fields_between_two_valid_tokens_breaks_the_signature(keyring: Keyring) -> None:
    a = unb64(sign(keyring, "click", 1001, LINK))
    b = unb64(sign(keyring, "click", 2002, "ffeeddccbbaa9988"))
    body_end = len(a) - MAC_BYTES
    assert len(a) == len(b)
    # a's body with b's MAC, and the reverse
    for forged in (a[:body_end] + b[body_end:], b[:body_end] + a[body_end:]):
        with pytest.raises(BadSignature):
            verify(b64(forged), keyring)
    # a's delivery id with b's link key (and MAC), b's delivery id with a's link key
    link_start = body_end - 8
    for forged in (a[:link_start] + b[link_start:], b[:link_start] + a[link_start:]):
        with pytest.raises(BadSignature):
            verify(b64(forged), keyring)
    # another kind with the same delivery: an unsubscribe token's MAC cannot vouch for an open
    u = unb64(sign(keyring, "unsubscribe", 1001))
    o = unb64(sign(keyring, "open", 1001))
    with pytest.raises(BadSignature):
        verify(b64(o[: len(o) - MAC_BYTES] + u[len(u) - MAC_BYTES :]), keyring)


def test_wrong_kind_is_refused_only_after_the_signature_checks(keyring: Keyring) -> None:
    opened = sign(keyring, "open", 5)
    with pytest.raises(WrongKind):
        verify(opened, keyring, "unsubscribe")
    with pytest.raises(WrongKind):
        verify(sign(keyring, "click", 5, LINK), keyring, "open")
    forged = bytearray(unb64(opened))
    forged[-1] ^= 1
    with pytest.raises(BadSignature):
        verify(b64(bytes(forged)), keyring, "unsubscribe")


def test_unknown_key_id_and_a_same_named_foreign_key(keyring: Keyring) -> None:
    foreign = Keyring({"k9": KEY_A})
    with pytest.raises(UnknownKey):
        verify(sign(foreign, "open", 5), keyring)
    impostor = Keyring({"k1": KEY_B})  # same id, other secret
    with pytest.raises(BadSignature):
        verify(sign(impostor, "open", 5), keyring)


def test_rotation_retired_keys_verify_removed_keys_do_not() -> None:
    old = Keyring({"k2025": KEY_A})
    issued = sign(old, "unsubscribe", 77)

    rotated = Keyring({"k2025": KEY_A, "k2026": KEY_B}, active="k2026")
    assert verify(issued, rotated).key_id == "k2025"  # retired but still configured
    fresh = sign(rotated, "unsubscribe", 77)
    assert verify(fresh, rotated).key_id == "k2026" and fresh != issued

    removed = Keyring({"k2026": KEY_B})
    with pytest.raises(UnknownKey):
        verify(issued, removed)
    assert verify(fresh, removed).delivery_id == 77


def test_a_mac_for_another_purpose_is_not_a_token_mac(keyring: Keyring) -> None:
    body = unb64(sign(keyring, "open", 5))[:-MAC_BYTES]
    coupon_mac = keyring.mac("k1", "coupon/v1", body)[:MAC_BYTES]
    with pytest.raises(BadSignature):
        verify(b64(body + coupon_mac), keyring)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (bytes([2, 2, 2]) + b"k1" + bytes([5]), "version"),
        (bytes([1, 5, 2]) + b"k1" + bytes([5]), "kind"),  # 4 is bounce (topslot.links.verp)
        (bytes([1, 0, 2]) + b"k1" + bytes([5]), "kind"),
        (bytes([1, 2, 0]) + bytes([5, 5, 5]), "key id length"),
        (bytes([1, 2, 13]) + b"k" * 13 + bytes([5]), "key id length"),
        (bytes([1, 2, 2]) + b"K1" + bytes([5]), "key id"),
        (bytes([1, 2, 2]) + b"k1" + bytes([0x85, 0x00]), "non-canonical varint"),
        (bytes([1, 2, 2]) + b"k1" + bytes([0xFF] * 9 + [0x01]), "varint too long"),
        (bytes([1, 2, 2]) + b"k1" + bytes([5, 0]), "trailing byte"),
        (bytes([1, 3, 2]) + b"k1" + bytes([5]) + bytes(8), "link key on an unsubscribe"),
        (bytes([1, 1, 2]) + b"k1" + bytes([5]) + bytes(7), "short link key"),
    ],
)
def test_non_canonical_bodies_are_refused_even_with_a_genuine_mac(keyring: Keyring, body: bytes, problem: str) -> None:
    with pytest.raises(MalformedToken):
        verify(signed_raw(keyring, body), keyring)


def test_non_canonical_base64_spellings_are_refused(keyring: Keyring) -> None:
    token = sign(keyring, "open", 12345)
    assert len(token) % 4 != 0  # the last character has unused low bits
    last = ALPHABET.index(token[-1])
    for twin in ALPHABET:
        if twin != token[-1] and base64.urlsafe_b64decode(token[:-1] + twin + "=" * (-len(token) % 4)) == unb64(token):
            with pytest.raises(MalformedToken):
                verify(token[:-1] + twin, keyring)
            break
    else:
        pytest.fail(f"no twin spelling found for {token[-1]!r} ({last})")
    with pytest.raises(MalformedToken):
        verify(token + "=", keyring)  # padding is never part of a token


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "A",
        "not a token",
        "AQIC\nazE",
        "AQICazE.",
        "AQICazE%2F",
        "AQICazE/",
        "AQICazE+",
        "x" * 81,
        None,
        12345,
        b"AQICazE",
    ],
)
def test_junk_is_malformed_not_a_crash(keyring: Keyring, junk: object) -> None:
    with pytest.raises(MalformedToken):
        verify(junk, keyring)  # type: ignore[arg-type]


def test_query_and_path_tricks_around_a_valid_token_are_refused(keyring: Keyring) -> None:
    token = sign(keyring, "click", 9, LINK)
    for trick in (
        f"{token}?url=https://evil.example",
        f"{token}&url=https://evil.example",
        f"{token}/https://evil.example",
        f"{token}/../{token}",
        f"../{token}",
        f"{token}%00",
        f"{token}\n",
        f" {token}",
        f"{token}#x",
    ):
        with pytest.raises(MalformedToken):
            verify(trick, keyring)


@pytest.mark.parametrize(
    ("kind", "delivery_id", "link"),
    [
        ("complaint", 1, None),
        ("click", -1, LINK),
        ("click", MAX_DELIVERY_ID + 1, LINK),
        ("click", True, LINK),
        ("click", 1.0, LINK),
        ("click", 1, None),
        ("click", 1, "00112233"),
        ("click", 1, LINK.upper()),
        ("open", 1, LINK),
    ],
)
def test_sign_refuses_bad_input(keyring: Keyring, kind: str, delivery_id: object, link: str | None) -> None:
    with pytest.raises(ValueError):
        sign(keyring, kind, delivery_id, link)  # type: ignore[arg-type]


def test_sign_with_an_explicit_key_id(keyring: Keyring) -> None:
    ring = Keyring({"k1": KEY_A, "k2": KEY_B}, active="k1")
    assert verify(sign(ring, "open", 3, key_id="k2"), ring).key_id == "k2"
    with pytest.raises(ValueError):
        sign(ring, "open", 3, key_id="k3")


@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(["click", "open", "unsubscribe", "bounce"]),
            st.integers(0, MAX_DELIVERY_ID) | st.sampled_from([1, 300, 2**40]),
            st.binary(min_size=8, max_size=8).map(bytes.hex) | st.sampled_from([LINK]),
        ),
        max_size=12,
    )
)
def test_a_signer_makes_the_tokens_sign_makes_whatever_it_signed_before(calls: list[tuple[str, int, str]]) -> None:
    # a Signer remembers the last delivery id's encoding and the link keys' bytes: never a stale one
    keyring = Keyring({"k1": KEY_A, "k2": KEY_B}, active="k2")
    signer = Signer(keyring)
    for kind, delivery_id, link in calls:
        link_key = link if kind == "click" else None
        assert signer.sign(kind, delivery_id, link_key) == sign(keyring, kind, delivery_id, link_key)  # type: ignore[arg-type]
        assert verify(signer.sign(kind, delivery_id, link_key), keyring).delivery_id == delivery_id  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "delivery_id", "link"),
    [
        ("click", True, LINK),
        ("click", -1, LINK),
        ("click", 1, [LINK]),
        ("open", 1, LINK),
        ("click", 1, LINK.upper()),
        ("complaint", 1, None),
    ],
)
def test_a_signer_refuses_bad_input_even_after_good_tokens_for_the_same_values(
    keyring: Keyring, kind: str, delivery_id: object, link: str | None
) -> None:
    signer = Signer(keyring)
    signer.sign("click", 1, LINK)  # remembered: delivery id 1 and LINK's bytes
    with pytest.raises(ValueError):
        signer.sign(kind, delivery_id, link)  # type: ignore[arg-type]


def test_a_signer_of_an_unknown_key_id_is_refused(keyring: Keyring) -> None:
    with pytest.raises(ValueError, match="not in the keyring"):
        Signer(keyring, "k3")
    assert verify(Signer(keyring, "k1").sign("open", 5), keyring).key_id == "k1"
