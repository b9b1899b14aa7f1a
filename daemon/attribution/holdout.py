"""The holdout group: a fixed, pseudo-random share of a campaign's audience that is never sent it.

``holdout_score`` is a keyed hash (BLAKE2b, keyed with the campaign id) of the contact id, read as
a number in [0, 1). A contact is held out when its score is below the campaign's share, so:
- the same contacts stay out however often the campaign is re-planned (no randomness, no state);
- every channel and slot of a contact agrees (the channel is not hashed);
- raising the share keeps everybody already held out, and adds more;
- another campaign draws an independent group (another key).
Pure.
"""

from __future__ import annotations

import hashlib

_PERSON = b"topslot-holdout"  # BLAKE2b personalisation: this hash means nothing elsewhere
_SCALE = float(1 << 64)


def keyed_score(campaign_id: str, contact_id: int | str, person: bytes) -> float:
    """A number in [0, 1), uniform over contacts, fixed for (campaign, contact, ``person``): draws
    with another ``person`` (BLAKE2b personalisation, at most 16 bytes) are independent of it."""
    key = campaign_id.encode("utf-8")[:64]
    digest = hashlib.blake2b(str(contact_id).encode("utf-8"), key=key, person=person[:16], digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def holdout_score(campaign_id: str, contact_id: int | str) -> float:
    """A number in [0, 1), uniform over contacts, fixed for (campaign, contact)."""
    return keyed_score(campaign_id, contact_id, _PERSON)


def in_holdout(campaign_id: str, contact_id: int | str, share: float) -> bool:
    """Whether the contact is kept out of the campaign (``share`` 0.05 for ``holdout: 5%``)."""
    return share > 0 and holdout_score(campaign_id, contact_id) < share
