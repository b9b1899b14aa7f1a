"""Coupon keys from the signing keyring: each signing key yields one coupon key (its ``coupon``
purpose subkey), so a coupon MAC is never valid as a link token or the other way round. New codes
use the active key; verification tries every configured key (keys rotate, codes stay valid)."""

from __future__ import annotations

from topslot.links.keys import Keyring

COUPON_PURPOSE = "coupon"
COUPON_MESSAGE = b"topslot-coupon"


def active_coupon_key(keyring: Keyring) -> bytes:
    """The key that makes new codes."""
    return keyring.mac(keyring.active_id, COUPON_PURPOSE, COUPON_MESSAGE)


def coupon_keys(keyring: Keyring) -> dict[str, bytes]:
    """Every coupon key by signing key id, the active one first."""
    ids = [keyring.active_id, *(k for k in keyring.key_ids if k != keyring.active_id)]
    return {kid: keyring.mac(kid, COUPON_PURPOSE, COUPON_MESSAGE) for kid in ids}
