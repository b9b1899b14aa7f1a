"""VERP return paths (pure): each message's envelope sender names its delivery, signed.

``return_path(Signer(keyring), 42, "bounce", "bounces.example.com")`` is
``bounce+{token}@bounces.example.com``, where ``token`` is a ``bounce`` token of
``topslot.links.tokens`` (delivery id, key id and a 96-bit HMAC; 15–20 characters for ids below
2**28). Bounces are addressed to the envelope sender, so a bounce names its delivery by the address
it arrives at; ``delivery_of`` verifies the token (a forged or altered address names nothing).

The token is base64url: its letters' case matters. RFC 5321 keeps local parts case-sensitive and
Postfix, Exim and the LMTP/SMTP receiver here preserve it; a relay that folds case breaks the
signature, and such bounces are then matched by the signed unsubscribe token in the returned headers
(``topslot.bounces.classify``), not lost.
"""

from __future__ import annotations

import re

from topslot.links.keys import Keyring
from topslot.links.tokens import Signer, TokenError, verify

MAX_LOCAL = 64  # RFC 5321 §4.5.3.1.1
_ADDRESS_RE = re.compile(r"^<?(?P<local>[^@<>\s]+)\+(?P<token>[A-Za-z0-9_-]{8,80})@(?P<domain>[^@<>\s]+?)>?$")


class NotVerp(TokenError):
    """The address is not one of ours (no ``local+token@domain`` shape, another local part)."""


def return_path(signer: Signer, delivery_id: int, local: str, domain: str) -> str:
    """The envelope sender of delivery ``delivery_id``: ``{local}+{token}@{domain}``, the token signed
    by ``signer`` (a campaign's: ``CampaignLinks.signer``)."""
    address_local = f"{local}+{signer.sign('bounce', delivery_id)}"
    if len(address_local) > MAX_LOCAL:
        raise ValueError(f"VERP local part longer than {MAX_LOCAL} characters: use a shorter key id or local part")
    return f"{address_local}@{domain}"


def split(address: str) -> tuple[str, str, str]:
    """(local, token, domain) of a ``local+token@domain`` address (angle brackets allowed)."""
    match = _ADDRESS_RE.fullmatch(address.strip())
    if match is None:
        raise NotVerp("not a local+token@domain address")
    return match["local"], match["token"], match["domain"].lower()


def delivery_of(address: str, keyring: Keyring, local: str) -> int:
    """The delivery id a VERP address names, verified; ``TokenError`` (``NotVerp``, a bad or unknown
    signature, another kind of token) when it names none."""
    found_local, token, _ = split(address)
    if found_local.lower() != local:
        raise NotVerp("another local part")
    return verify(token, keyring, "bounce").delivery_id
