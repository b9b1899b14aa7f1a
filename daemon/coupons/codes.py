"""Generated coupon codes: readable, unguessable, verifiable offline, one per (campaign, contact).

A code is ``PREFIX + BODY``; ``BODY`` is ``length`` characters of Crockford base32
(``0-9 A-Z`` without ``I L O U``), the last of which is a check character.

- **Payload.** The ``length - 1`` data characters hold ``n = 5 * (length - 1)`` bits: the contact id,
  encrypted with a keyed pseudo-random permutation of the n-bit numbers (an FF1-style Feistel
  network; round function keyed BLAKE2b, key derived per campaign with HMAC-SHA256 from the coupon
  key). Decrypting gives back a number; it is valid only if it is a contact id below
  ``2 ** id_bits``, where ``id_bits = min(31, n - 20)``: at least 20 bits are redundancy, so a
  guessed body is valid with probability at most 2**-20 (one in a million), and a shop holding the
  key and the campaign's id can check a code *and learn whose it is* with no database.
- **Unique.** A permutation never maps two contact ids to the same body: no collisions, ever.
- **Check character.** Over GF(32): the sum of ``alpha**k * value`` of every character (the last
  one weighted 1, the one before alpha, ...) is zero. Weights are non-zero and differ between
  neighbours, so every single-character typo and every adjacent transposition is caught by the
  check alone, with no key. The prefix is covered too (its I/L/O/U read as 1/1/0/V).
- **Typing.** Input is upper-cased; spaces, dashes and dots are dropped; O reads as 0, I and L as 1.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from topslot.errors import TopslotError

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BITS_PER_CHAR = 5
MIN_TAG_BITS = 20  # redundancy: a random body is valid with probability <= 2**-20
MAX_ID_BITS = 31  # contacts.id is a 32-bit signed integer
ROUNDS = 8
MIN_LENGTH, MAX_LENGTH = 6, 32
KEY_CONTEXT = b"topslot-coupon"
SEPARATORS = " -._\t"

# canonical value of every character a person may type
_VALUE: dict[str, int] = {c: i for i, c in enumerate(ALPHABET)}
_VALUE.update({"O": 0, "I": 1, "L": 1, "U": _VALUE["V"]})
_CANONICAL = {c: ALPHABET[v] for c, v in _VALUE.items()}
_DROP = str.maketrans("", "", SEPARATORS)

# GF(32) with the primitive polynomial x^5 + x^2 + 1; alpha = x
_EXP: list[int] = []
_x = 1
for _ in range(31):
    _EXP.append(_x)
    _x <<= 1
    if _x & 0b100000:
        _x ^= 0b100101
_LOG = {v: i for i, v in enumerate(_EXP)}
# _WEIGHTED[k][v] = alpha**k * v: the weight of the k-th character from the end (period 31)
_WEIGHTED = [[0] + [_EXP[(k + _LOG[v]) % 31] for v in range(1, 32)] for k in range(31)]


class CouponCodeError(TopslotError):
    """A code cannot be generated (bad parameters, or a contact id too large for the length)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to "is this code good?": ``reason`` says why not (``ok`` when valid)."""

    valid: bool
    reason: str
    code: str = ""  # the canonical form that was checked
    campaign_id: str | None = None
    contact_id: int | None = None

    def __bool__(self) -> bool:
        return self.valid


# ---------------------------------------------------------------- text


def canonical(code: str) -> str:
    """The canonical form of a typed code: ``" mom-7k2q-9xhd "`` → ``"M0M7K2Q9XHD"``.

    Raises ``ValueError`` naming the first character that cannot be part of a code.
    """
    text = code.translate(_DROP).upper()
    try:
        return "".join(_CANONICAL[c] for c in text)
    except KeyError:
        bad = next(c for c in text if c not in _CANONICAL)
        raise ValueError(f"'{bad}' cannot be part of a code") from None


def _syndrome(text: str, shift: int = 0) -> int:
    """XOR of alpha**(k + shift) * value over canonical ``text``, the last character's k being 0."""
    total = 0
    k = shift + len(text) - 1
    for c in text:
        total ^= _WEIGHTED[k % 31][_VALUE[c]]
        k -= 1
    return total


def check_character(text: str) -> str:
    """The character to append to ``text`` (any code characters) so that ``has_valid_check`` holds."""
    # once appended, every character of text moves one place from the end (weight times alpha);
    # the check character (weight 1) must cancel their sum
    return ALPHABET[_syndrome(canonical(text), shift=1)]


def has_valid_check(code: str) -> bool:
    """True if the code's check character matches (catches typos; proves nothing about the key)."""
    try:
        text = canonical(code)
    except ValueError:
        return False
    return len(text) >= 2 and _syndrome(text) == 0


# ---------------------------------------------------------------- keys and capacity


def coupon_key(signing_key: bytes) -> bytes:
    """The coupon key derived from a link signing key: HMAC-SHA256(key, b"topslot-coupon")."""
    return hmac.digest(signing_key, KEY_CONTEXT, "sha256")


def payload_bits(length: int) -> int:
    return BITS_PER_CHAR * (length - 1)


def id_bits(length: int) -> int:
    """How many bits of contact id a body of ``length`` characters carries."""
    return max(0, min(MAX_ID_BITS, payload_bits(length) - MIN_TAG_BITS))


def max_contact_id(length: int) -> int:
    """The largest contact id a code of ``length`` can carry (31 at 6, 1,048,575 at 9, 33,554,431 at 10)."""
    return (1 << id_bits(length)) - 1


def min_length_for(contact_id: int) -> int:
    """The shortest body length that can carry ``contact_id``."""
    for length in range(MIN_LENGTH, MAX_LENGTH + 1):
        if contact_id <= max_contact_id(length):
            return length
    raise CouponCodeError(f"contact id {contact_id} is beyond any code length")


def guess_probability(length: int) -> float:
    """Chance that a random body of ``length`` characters passes ``verify`` for some contact."""
    return (1 << id_bits(length)) / (1 << payload_bits(length))


# ---------------------------------------------------------------- the permutation


class _Permutation:
    """An FF1-style Feistel permutation of the ``n``-bit numbers (radix 2, ``ROUNDS`` rounds)."""

    __slots__ = ("n", "u", "v", "_rounds", "_width", "_plan")

    def __init__(self, key: bytes, n: int):
        self.n, self.u, self.v = n, n // 2, n - n // 2
        # one keyed BLAKE2b state per round, copied per call (cheaper than re-keying)
        self._rounds = [
            hashlib.blake2b(key=hmac.digest(key, b"round" + bytes((i, n)), "sha256"), digest_size=16)
            for i in range(ROUNDS)
        ]
        self._width = (self.v + 7) // 8
        # each round's state and the mask of the half it writes (u bits on even rounds, v on odd)
        self._plan = [(h, (1 << (self.u if i % 2 == 0 else self.v)) - 1) for i, h in enumerate(self._rounds)]

    def encrypt(self, x: int) -> int:
        v, width = self.v, self._width
        a, b = x >> v, x & ((1 << v) - 1)
        for round_state, mask in self._plan:  # once per code generated: kept to plain locals
            h = round_state.copy()
            h.update(b.to_bytes(width, "big"))
            a, b = b, (a + int.from_bytes(h.digest(), "big")) & mask
        return (a << v) | b

    def decrypt(self, y: int) -> int:
        u, v, rounds, width = self.u, self.v, self._rounds, self._width
        a, b = y >> v, y & ((1 << v) - 1)
        for i in reversed(range(ROUNDS)):
            m = u if i % 2 == 0 else v
            h = rounds[i].copy()
            h.update(a.to_bytes(width, "big"))
            a, b = (b - int.from_bytes(h.digest(), "big")) & ((1 << m) - 1), a
        return (a << v) | b


def _from_text(text: str) -> int:
    number = 0
    for c in text:
        number = (number << BITS_PER_CHAR) | _VALUE[c]
    return number


# ---------------------------------------------------------------- a campaign's scheme


class GeneratedScheme:
    """How one campaign makes its codes: build once per campaign, then call ``code`` per contact."""

    __slots__ = (
        "key", "campaign_id", "prefix", "length", "_perm", "_prefix_canonical", "_prefix_syndrome", "_limit",
        "_places",
    )  # fmt: skip

    def __init__(self, key: bytes, campaign_id: str, prefix: str = "", length: int = 10):
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            raise CouponCodeError(f"length must be {MIN_LENGTH}..{MAX_LENGTH}, not {length}")
        if prefix and not (prefix.isascii() and prefix.isalnum() and prefix == prefix.upper()):
            raise CouponCodeError(f"prefix '{prefix}' must be uppercase letters and digits")
        if not campaign_id:
            raise CouponCodeError("a campaign id is needed")
        self.key, self.campaign_id, self.prefix, self.length = key, campaign_id, prefix, length
        self._perm = _permutation(key, campaign_id, payload_bits(length))
        self._prefix_canonical = canonical(prefix)
        # the prefix's share of the check sum is the same for every code of the campaign
        self._prefix_syndrome = _syndrome(self._prefix_canonical, shift=length)
        self._limit = max_contact_id(length)
        # the check sum's weights of the data characters, the last one first (the check character is 0)
        self._places = [_WEIGHTED[k % 31] for k in range(1, length)]

    def __repr__(self) -> str:  # never shows the key
        return f"GeneratedScheme(campaign_id={self.campaign_id!r}, prefix={self.prefix!r}, length={self.length})"

    def code(self, contact_id: int) -> str:
        """This campaign's code for ``contact_id`` (always the same for the same key)."""
        limit = self._limit
        if not 1 <= contact_id <= limit:
            raise CouponCodeError(
                f"contact id {contact_id} does not fit a {self.length}-character code (1..{limit}); "
                f"use length >= {min_length_for(contact_id)}"
            )
        number = self._perm.encrypt(contact_id)
        chars = []
        check = self._prefix_syndrome
        for weights in self._places:  # from the end
            value = number & 31
            number >>= BITS_PER_CHAR
            chars.append(ALPHABET[value])
            check ^= weights[value]
        chars.reverse()
        return self.prefix + "".join(chars) + ALPHABET[check]

    def verify(self, code: str, contact_id: int | None = None) -> Verdict:
        """Check the characters, the check character, the prefix and length, then authenticity."""
        try:
            text = canonical(code)
        except ValueError as exc:
            return Verdict(False, f"bad_character: {exc}")
        if not text:
            return Verdict(False, "empty")
        if _syndrome(text) != 0:
            return Verdict(False, "bad_check: a character is mistyped", text)
        if not text.startswith(self._prefix_canonical):
            return Verdict(False, f"wrong_prefix: codes of {self.campaign_id} start with {self.prefix}", text)
        body = text[len(self._prefix_canonical) :]
        if len(body) != self.length:
            return Verdict(False, f"wrong_length: {len(body)} characters after the prefix, not {self.length}", text)
        found = self._perm.decrypt(_from_text(body[:-1]))
        if not 1 <= found <= max_contact_id(self.length):
            return Verdict(False, f"not_authentic: not a code of campaign {self.campaign_id}", text, self.campaign_id)
        if contact_id is not None and found != contact_id:
            return Verdict(False, "wrong_contact: the code belongs to another contact", text, self.campaign_id)
        return Verdict(True, "ok", text, self.campaign_id, found)


@lru_cache(maxsize=256)
def _permutation(key: bytes, campaign_id: str, n: int) -> _Permutation:
    campaign_key = hmac.digest(key, b"campaign\x00" + campaign_id.encode("utf-8"), "sha256")
    return _Permutation(campaign_key, n)


# ---------------------------------------------------------------- the functions others call


def generate(key: bytes, campaign_id: str, contact_id: int, prefix: str = "", length: int = 10) -> str:
    """``prefix`` + a ``length``-character code for (campaign, contact), check character last."""
    return scheme(key, campaign_id, prefix, length).code(contact_id)


@lru_cache(maxsize=256)
def scheme(key: bytes, campaign_id: str, prefix: str = "", length: int = 10) -> GeneratedScheme:
    """The (cached) scheme of one campaign."""
    return GeneratedScheme(key, campaign_id, prefix, length)


def verify(
    code: str,
    key: bytes | None = None,
    campaign_id: str | None = None,
    contact_id: int | None = None,
    *,
    prefix: str = "",
    length: int | None = None,
) -> Verdict:
    """Is ``code`` good?

    - code only: the check character catches typos (no key needed);
    - with ``key`` and ``campaign_id`` (and the campaign's ``prefix``; ``length`` defaults to what
      follows the prefix): proves the code was made by that campaign and finds its contact;
    - with ``contact_id`` too: proves it is that contact's code.
    """
    if key is None or campaign_id is None:
        try:
            text = canonical(code)
        except ValueError as exc:
            return Verdict(False, f"bad_character: {exc}")
        if len(text) < 2:
            return Verdict(False, "too_short", text)
        if _syndrome(text) != 0:
            return Verdict(False, "bad_check: a character is mistyped", text)
        return Verdict(True, "ok: check character matches (authenticity needs the key and campaign)", text)
    if length is None:
        try:
            length = len(canonical(code)) - len(prefix)
        except ValueError as exc:
            return Verdict(False, f"bad_character: {exc}")
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            return Verdict(False, f"wrong_length: {length} characters after the prefix")
    try:
        return scheme(key, campaign_id, prefix, length).verify(code, contact_id)
    except CouponCodeError as exc:
        return Verdict(False, f"bad_parameters: {exc}")
