"""Which campaign and contact a typed coupon code belongs to (pure part).

Generated codes carry both: ``GeneratedDecoder`` checks a code against every loaded campaign that
generates codes (prefix, length, then the keyed permutation under each configured coupon key) with
no database. Pool codes must be looked up: ``code_spellings`` lists the forms to look for, since
shoppers change case, add dashes and type O for 0 (``topslot.coupons.codes.canonical``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from topslot.campaign import Campaign
from topslot.coupons import codes


@dataclass(frozen=True, slots=True)
class CouponMatch:
    """A code that belongs to (campaign, contact); ``code`` is its stored (canonical) form."""

    campaign_id: str
    contact_id: int
    code: str
    source: str  # generated | pool


def canonical_or_none(typed: str) -> str | None:
    """The canonical form, or None when the text cannot be a code of topslot's alphabet."""
    try:
        text = codes.canonical(typed)
    except ValueError:
        return None
    return text or None


def code_spellings(typed: str) -> list[str]:
    """Forms under which a typed code may be stored: as typed, upper-case, without separators,
    canonical (O→0, I/L→1, U→V). Distinct, in that order."""
    trimmed = typed.strip()
    compact = trimmed.translate(str.maketrans("", "", codes.SEPARATORS))
    forms = [trimmed, trimmed.upper(), compact.upper(), canonical_or_none(trimmed) or ""]
    seen: list[str] = []
    for form in forms:
        if form and form not in seen:
            seen.append(form)
    return seen


class GeneratedDecoder:
    """Decodes generated codes of the given campaigns under any of the given coupon keys."""

    def __init__(self, campaigns: Iterable[Campaign], coupon_keys: Iterable[bytes]):
        self._keys = tuple(coupon_keys)
        self._specs: list[tuple[str, str, str, int]] = []  # campaign id, prefix, canonical prefix, length
        for campaign in campaigns:
            spec = campaign.coupon.generate if campaign.coupon is not None else None
            if spec is not None:
                self._specs.append((campaign.id, spec.prefix, codes.canonical(spec.prefix), spec.length))

    def decode(self, typed: str) -> CouponMatch | None:
        text = canonical_or_none(typed)
        if text is None or not codes.has_valid_check(text):
            return None  # a typo or not a generated code: no key work at all
        for campaign_id, prefix, canonical_prefix, length in self._specs:
            if len(text) != len(canonical_prefix) + length or not text.startswith(canonical_prefix):
                continue
            for key in self._keys:
                verdict = codes.scheme(key, campaign_id, prefix, length).verify(text)
                if verdict.valid and verdict.contact_id is not None:
                    stored = prefix + text[len(canonical_prefix) :]  # as generated: the prefix as written
                    return CouponMatch(campaign_id, verdict.contact_id, stored, "generated")
        return None
