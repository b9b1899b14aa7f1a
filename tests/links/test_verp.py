"""VERP return paths: signed, short enough for a local part, read back only when genuine."""

from __future__ import annotations

import pytest

from topslot.links.keys import Keyring
from topslot.links.tokens import BadSignature, Signer, WrongKind, sign
from topslot.links.verp import MAX_LOCAL, NotVerp, delivery_of, return_path, split

RING = Keyring({"k2027": b"verp-test-key-0123456789abcdef"})


def test_a_return_path_names_its_delivery_and_fits_a_local_part() -> None:
    for delivery_id in (1, 42, 2**28 - 1, 2**40):
        address = return_path(Signer(RING), delivery_id, "bounce", "bounces.shop.example")
        local, _, domain = address.partition("@")
        assert local.startswith("bounce+") and domain == "bounces.shop.example" and len(local) <= MAX_LOCAL
        assert delivery_of(address, RING, "bounce") == delivery_id
        assert delivery_of(f"<{address}>", RING, "bounce") == delivery_id  # as a DSN writes it


def test_forgeries_and_other_addresses_name_nothing() -> None:
    address = return_path(Signer(RING), 42, "bounce", "b.example")
    local, _, domain = address.partition("@")
    flipped = local[:-1] + ("A" if local[-1] != "A" else "B") + "@" + domain
    with pytest.raises(BadSignature):
        delivery_of(flipped, RING, "bounce")
    with pytest.raises(WrongKind):  # an unsubscribe token is not a return path
        delivery_of(f"bounce+{sign(RING, 'unsubscribe', 42)}@b.example", RING, "bounce")
    with pytest.raises(NotVerp):
        delivery_of(address, RING, "returns")  # another local part
    for other in ("news@shop.example", "bounce@b.example", "bounce+@b.example", "not an address"):
        with pytest.raises(NotVerp):
            split(other)
