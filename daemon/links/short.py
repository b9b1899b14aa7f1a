"""Short tracked links for SMS: ``{tracking_base_url}/s/{code}``, a fixed 26-character code (pure).

A short code says exactly what a click token says (``topslot.links.tokens``) about a click: which
delivery, which of the campaign's links (the 64-bit link key), signed by which key. It is stateless
(nothing is stored per message) and exactly 26 base64url characters (156 bits, big-endian)::

    key selector   4 bits   which signing key: the top 4 bits of SHA-256("topslot/short-link-key/" + key id)
    delivery id   40 bits   0 .. 2**40-1 (about 10**12 deliveries)
    link key      64 bits   the same key as in click tokens and the ``links`` table
    MAC           48 bits   HMAC-SHA256 under the key's "short-link/v1" subkey (``Keyring.mac``), cut to
                            48 bits, over the 14 bytes selector (1) + delivery id (5) + link key (8)

The purpose "short-link/v1" is not the purpose of click tokens ("link-token/v1") or coupon codes, so
a MAC made for one of them is never valid for another. Every 26-character string of the alphabet
decodes to exactly one (selector, delivery, link, MAC): there is no second spelling of a code, and
anything else (another length, another character) is refused before any MAC is computed.

Verification tries each configured key whose id has that selector (usually one; two ids share a
selector with odds 1/16, and then each is tried: a forger still faces a 48-bit MAC per key) and
compares MACs in constant time. No key with that selector: ``UnknownKey``; no key matches:
``BadSignature``. Like click tokens, codes never expire: they verify for as long as their key is
in the keyring. 48 bits are plenty against online guessing (2**47 requests on average to forge one
click of one delivery and link, which earns a click event and a redirect to the campaign's own page),
and keep an SMS link at ``len(base) + 29`` characters, 15-20 fewer than a ``/c/`` link.

A delivery id at or above 2**40 cannot be packed: ``DeliveryLinks.track`` then falls back to the
``/c/`` click token (longer, same click).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from base64 import urlsafe_b64decode, urlsafe_b64encode
from functools import lru_cache

from topslot.links.keys import Keyring
from topslot.links.tokens import BadSignature, MalformedToken, TokenClaims, UnknownKey
from topslot.links.urls import LINK_KEY_HEX

PURPOSE = "short-link/v1"
SHORT_CODE_CHARS = 26
SELECTOR_BITS, DELIVERY_BITS, LINK_BITS, MAC_BITS = 4, 40, 64, 48
MAX_SHORT_DELIVERY_ID = 2**DELIVERY_BITS - 1
_MAC_BYTES = MAC_BITS // 8
_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{26}$")
_LINK_RE = re.compile(rf"^[0-9a-f]{{{LINK_KEY_HEX}}}$")
# 26 characters are 156 bits; two leading "A"s (12 zero bits) make them 28 characters = 21 whole bytes.
_LEAD = "AA"
_LEAD_BYTES = 21


@lru_cache(maxsize=64)
def key_selector(key_id: str) -> int:
    """0..15: the 4 bits a short code carries to name its signing key."""
    return hashlib.sha256(b"topslot/short-link-key/" + key_id.encode("ascii")).digest()[0] >> 4


def sign_short(keyring: Keyring, delivery_id: int, link_key: str, *, key_id: str | None = None) -> str:
    """The 26-character short code for a click on ``link_key`` (16 lower-case hex digits) in
    ``delivery_id`` (0 .. 2**40-1), signed with the active key (or ``key_id``)."""
    if type(delivery_id) is not int or not 0 <= delivery_id <= MAX_SHORT_DELIVERY_ID:
        raise ValueError(f"a short link needs a delivery id in 0..2**40-1, got {delivery_id!r}")
    link = _link_int(link_key)
    kid = keyring.active_id if key_id is None else key_id
    if kid not in keyring:
        raise ValueError(f"key id {kid!r} is not in the keyring")
    selector = key_selector(kid)
    body = _body(selector, delivery_id, link)
    mac = int.from_bytes(keyring.mac(kid, PURPOSE, body)[:_MAC_BYTES], "big")
    value = (int.from_bytes(body, "big") << MAC_BITS) | mac
    return urlsafe_b64encode(value.to_bytes(_LEAD_BYTES, "big")).decode("ascii")[len(_LEAD) :]


def verify_short(code: str, keyring: Keyring) -> TokenClaims:
    """The click claims of a short code (kind ``click``, delivery id, link key, key id), or a
    ``TokenError``: ``MalformedToken`` (not 26 base64url characters), ``UnknownKey`` (no configured
    key has its selector), ``BadSignature`` (forged or altered)."""
    if type(code) is not str or not _CODE_RE.fullmatch(code):
        raise MalformedToken("not a short code")
    value = int.from_bytes(urlsafe_b64decode(_LEAD + code), "big")
    mac = (value & ((1 << MAC_BITS) - 1)).to_bytes(_MAC_BYTES, "big")
    value >>= MAC_BITS
    link = value & ((1 << LINK_BITS) - 1)
    delivery_id = (value >> LINK_BITS) & MAX_SHORT_DELIVERY_ID
    selector = value >> (LINK_BITS + DELIVERY_BITS)
    candidates = [kid for kid in keyring.key_ids if key_selector(kid) == selector]
    if not candidates:
        raise UnknownKey("short code signed with a key this keyring does not hold")
    body = _body(selector, delivery_id, link)
    for kid in candidates:
        if hmac.compare_digest(keyring.mac(kid, PURPOSE, body)[:_MAC_BYTES], mac):
            return TokenClaims("click", delivery_id, f"{link:016x}", kid)
    raise BadSignature("short code signature does not match")


def placeholder_code(marker: str = "preview") -> str:
    """A code-shaped placeholder (``preview0000...``, 26 characters) for previews and estimates:
    exactly as long as a real code, never valid (no MAC matches it but by 2**-48 chance)."""
    return (marker + "0" * SHORT_CODE_CHARS)[:SHORT_CODE_CHARS]


def _body(selector: int, delivery_id: int, link: int) -> bytes:
    return bytes((selector,)) + delivery_id.to_bytes(5, "big") + link.to_bytes(8, "big")


def _link_int(link_key: object) -> int:
    if type(link_key) is str and _LINK_RE.fullmatch(link_key):
        return int(link_key, 16)
    raise ValueError(f"a short link needs a link key of {LINK_KEY_HEX} lower-case hex digits")
