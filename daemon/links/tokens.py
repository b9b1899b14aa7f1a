"""Compact signed tokens for tracked links, open pixels and unsubscribe links (pure).

A token names what happened to which delivery: ``kind`` (click | open | unsubscribe | bounce: the
VERP return path of ``topslot.links.verp``), the delivery
id and, for clicks, the link key (which destination: the URL itself is never in the token). It is
base64url without padding of a canonical binary encoding followed by a truncated HMAC-SHA256:

    version (1 byte, = 1)
    kind (1 byte: 1 click, 2 open, 3 unsubscribe, 4 bounce)
    key id length n (1 byte, 1..12), key id (n bytes, a-z 0-9 _ -)
    delivery id (unsigned LEB128 varint, shortest form, < 2**63)
    link key (8 bytes, clicks only; absent otherwise)
    MAC (12 bytes = 96 bits): HMAC-SHA256 under the key's "link-token/v1" subkey, over all of the above

Every byte before the MAC is covered by it; anything that does not parse exactly (wrong length,
trailing bytes, a longer-than-needed varint, non-canonical base64) is refused before the MAC is
checked, and the MAC is compared in constant time. A click token is 39-43 characters for ids below 2**28
(open and unsubscribe tokens 11 fewer), 59 at most.

Validity: tokens carry no issue date and never expire by themselves. A token verifies for as long
as the key that signed it stays in the keyring, which is how CAN-SPAM's "an opt-out must work for
30 days after sending" is honoured: retire keys (stop signing) freely, remove them only 30+ days
after their last message (see ``topslot.links.keys``).
"""

from __future__ import annotations

import binascii
import hmac
import re
import string
from binascii import a2b_base64, b2a_base64
from functools import lru_cache
from typing import Literal, NamedTuple

from topslot.errors import TopslotError
from topslot.links.keys import KEY_ID_RE, Keyring
from topslot.links.urls import LINK_KEY_HEX

Kind = Literal["click", "open", "unsubscribe", "bounce"]
KINDS: dict[str, int] = {"click": 1, "open": 2, "unsubscribe": 3, "bounce": 4}
KIND_NAMES: dict[int, Kind] = {1: "click", 2: "open", 3: "unsubscribe", 4: "bounce"}
VERSION = 1
PURPOSE = "link-token/v1"
MAC_BYTES = 12
LINK_KEY_BYTES = LINK_KEY_HEX // 2
MAX_DELIVERY_ID = 2**63 - 1
TEST_DELIVERY_ID = 0
"""The delivery id of a proof's links (``topslot send-test``): no ledger row has it (ids start at 1),
and the tracking server records nothing for it."""
TEST_COUPON_PREFIX = "TEST-"
"""How a proof's coupon starts: never drawn from a pool, never a valid code."""
MAX_TOKEN_CHARS = 80  # the longest valid token is 59 characters
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class TokenError(TopslotError):
    """A token that must not be honoured. The tracking server answers all of them the same way."""


class MalformedToken(TokenError):
    """Not a token at all: bad characters, wrong length, unknown version or kind, trailing bytes."""


class BadSignature(TokenError):
    """Well-formed, but the MAC does not match: forged or altered."""


class UnknownKey(TokenError):
    """Signed with a key id this keyring does not hold (never existed, or removed after rotation)."""


class WrongKind(TokenError):
    """Authentic, but of another kind than the URL it arrived on (an open token on /c/, ...)."""


class TokenClaims(NamedTuple):
    """What a verified token says."""

    kind: Kind
    delivery_id: int
    link_key: str | None  # 16 hex digits for clicks, None otherwise
    key_id: str


def sign(
    keyring: Keyring, kind: Kind, delivery_id: int, link_key: str | None = None, *, key_id: str | None = None
) -> str:
    """A token for ``kind`` on ``delivery_id`` (and ``link_key`` for clicks), signed with the active key
    (or ``key_id``). To sign many, make one ``Signer`` and call its ``sign``."""
    return Signer(keyring, key_id).sign(kind, delivery_id, link_key)


class Signer:
    """Signs tokens with one key of a keyring (its active key unless ``key_id`` names another): what
    ``sign`` makes, with the key's MAC state and each kind's prefix found once, and the last delivery
    id's encoding and the link keys' bytes remembered (a message signs several tokens for one id,
    with the campaign's few link keys), so a token costs little more than its MAC and its base64.
    ValueError if the key id is not in the keyring."""

    __slots__ = ("key_id", "_mac", "_prefixes", "_last", "_links")

    def __init__(self, keyring: Keyring, key_id: str | None = None):
        kid = keyring.active_id if key_id is None else key_id
        try:
            self._mac = keyring.mac_function(kid, PURPOSE)
        except KeyError:
            raise ValueError(f"key id {kid!r} is not in the keyring") from None
        self.key_id = kid
        self._prefixes = {kind: _prefix(kid, code) for kind, code in KINDS.items()}
        self._last: tuple[object, bytes] = (None, b"")  # (delivery id, its varint)
        self._links: dict[object, bytes] = {}  # link key → its 8 bytes

    def sign(self, kind: Kind, delivery_id: int, link_key: str | None = None) -> str:
        """A token for ``kind`` on ``delivery_id`` (and ``link_key`` for clicks); ValueError for
        anything ``sign`` refuses."""
        prefix = self._prefixes.get(kind)
        if prefix is None:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        last, encoded = self._last
        if delivery_id is not last:
            if type(delivery_id) is not int or not 0 <= delivery_id <= MAX_DELIVERY_ID:
                raise ValueError(f"delivery id must be an integer in 0..2**63-1, got {delivery_id!r}")
            encoded = _varint(delivery_id)
            self._last = (delivery_id, encoded)
        body = prefix + encoded
        if kind == "click":
            raw = self._links.get(link_key) if type(link_key) is str else None
            if raw is None:
                raw = _link_bytes(link_key)
                if len(self._links) >= _MAX_LINK_KEYS:
                    self._links.clear()
                self._links[link_key] = raw
            body += raw
        elif link_key is not None:
            raise ValueError(f"only click tokens carry a link key, not {kind}")
        body += self._mac(body)[:MAC_BYTES]
        return b2a_base64(body, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")


_MAX_LINK_KEYS = 4096  # a Signer's remembered link keys (per-recipient URLs come and go)


def verify(token: str, keyring: Keyring, kind: Kind | None = None) -> TokenClaims:
    """The token's claims, or a ``TokenError``. ``kind``: the kind the caller's URL expects."""
    raw = _decode(token)
    size = len(raw)
    if size < 4 + MAC_BYTES or raw[0] != VERSION:
        raise MalformedToken("unknown token version or too short")
    code, kid_end = raw[1], 3 + raw[2]
    found_kind = KIND_NAMES.get(code)
    if found_kind is None:
        raise MalformedToken("unknown token kind")
    if not 4 <= kid_end <= 15:
        raise MalformedToken("bad key id length")
    kid = raw[3:kid_end].decode("ascii", "replace")
    delivery_id, pos = _read_varint(raw, kid_end, size - MAC_BYTES)
    link_end = pos + LINK_KEY_BYTES if code == 1 else pos
    if link_end + MAC_BYTES != size:
        raise MalformedToken("wrong token length")
    if kid not in keyring:
        if not KEY_ID_RE.fullmatch(kid):
            raise MalformedToken("bad key id")
        raise UnknownKey(f"token signed with unknown key id {kid!r}")
    if not hmac.compare_digest(keyring.mac(kid, PURPOSE, raw[:link_end])[:MAC_BYTES], raw[link_end:]):
        raise BadSignature("token signature does not match")
    if kind is not None and kind != found_kind:
        raise WrongKind(f"a {found_kind} token where a {kind} token was expected")
    return TokenClaims(found_kind, delivery_id, raw[pos:link_end].hex() if code == 1 else None, kid)


@lru_cache(maxsize=256)
def _prefix(kid: str, code: int) -> bytes:
    raw_kid = kid.encode("ascii")
    return bytes((VERSION, code, len(raw_kid))) + raw_kid


def _link_bytes(link_key: object) -> bytes:
    if type(link_key) is str and len(link_key) == LINK_KEY_HEX:
        try:
            raw = bytes.fromhex(link_key)
        except ValueError:
            raw = b""
        if raw.hex() == link_key:  # lower-case hex only: one spelling per key
            return raw
    raise ValueError(f"a click token needs a link key of {LINK_KEY_HEX} lower-case hex digits")


def _decode(token: object) -> bytes:
    if type(token) is not str or not 0 < len(token) <= MAX_TOKEN_CHARS or not _TOKEN_RE.fullmatch(token):
        raise MalformedToken("not a token")
    tail = len(token) % 4
    if tail == 1:
        raise MalformedToken("impossible base64 length")
    # base64 ignores the unused low bits of the last character: refuse any spelling but the canonical one
    if tail and _B64_VALUE[token[-1]] & (0x0F if tail == 2 else 0x03):
        raise MalformedToken("non-canonical base64")
    try:
        return a2b_base64(token.encode("ascii").translate(_FROM_URLSAFE) + _PADDING[tail], strict_mode=True)
    except (binascii.Error, ValueError):
        raise MalformedToken("not base64url") from None


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(raw: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    start = pos
    while pos < end and pos - start < 9:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and pos - start > 1:
                raise MalformedToken("non-canonical delivery id")
            return value, pos
        shift += 7
    raise MalformedToken("bad delivery id")


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
_B64_VALUE = {c: i for i, c in enumerate(string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_")}
