"""One observed open or click (``Hit``), and the cleaning of the outside input it carries (pure).

User-Agent and Referer are stored as data: cut to ``MAX_HEADER_CHARS`` *before* anything else
touches them, control characters (CR, LF, NUL, ...) replaced by ``?``, anything that is not valid
UTF-8 replaced, so a hostile header can neither break a log line nor a database insert.

The client IP is the TCP peer, unless the peer is one of the configured trusted proxies: then
``X-Forwarded-For`` is read from the right, skipping trusted proxies, and the first address that is
not one of them is the client (an entry that is not an IP address stops the walk).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

MAX_HEADER_CHARS = 500  # events.user_agent / events.referer
MAX_FORWARDED_HOPS = 20
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_CONTROL = {i: "?" for i in (*range(32), 127)}


@dataclass(slots=True)
class Hit:
    """An open or a click as the server saw it; labelled and stored later, in a batch."""

    kind: str  # open | click
    delivery_id: int
    occurred_at: datetime
    method: str  # GET | HEAD
    user_agent: str | None
    referer: str | None
    ip: str | None
    campaign_id: str | None = None  # clicks know it (the redirect needed it); opens get it at flush
    link_id: int | None = None  # clicks only
    attempts: int = 0  # failed flushes so far
    seq: int = 0  # its number in this server run, in the order it is written (``EventBuffer.add``)


def clean_header(value: str | None, limit: int = MAX_HEADER_CHARS) -> str | None:
    """``value`` cut to ``limit`` characters, control characters and invalid UTF-8 replaced; None if empty."""
    if not value:
        return None
    if len(value) <= MEMO_CHARS and limit == MAX_HEADER_CHARS:
        return _clean_short(value)  # User-Agents repeat a lot: cleaned once each
    return _clean(value, limit)


MEMO_CHARS = 512  # longer values are cleaned every time (a bounded memo of short ones only)


@lru_cache(maxsize=4096)
def _clean_short(value: str) -> str | None:
    return _clean(value, MAX_HEADER_CHARS)


def _clean(value: str, limit: int) -> str | None:
    text = value[:limit].translate(_CONTROL)
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates from undecodable bytes
    return text.strip() or None


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` → networks; ``ValueError`` names a bad entry."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value!r}") from None
    return tuple(out)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The client's address: the peer, or (behind trusted proxies) from ``X-Forwarded-For``."""
    if not trusted or not peer:
        return _ip_text(peer)
    current = _parse_ip(peer)
    if current is None or not _within(current, trusted):
        return _ip_text(peer)
    hops = (forwarded_for or "")[-64 * MAX_FORWARDED_HOPS :].split(",")[-MAX_FORWARDED_HOPS:]  # the right end matters
    for hop in reversed(hops):
        address = _parse_ip(hop.strip())
        if address is None:
            break
        current = address
        if not _within(address, trusted):
            break
    return str(current)


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _ip_text(peer: str | None) -> str | None:
    """The peer as the socket gave it (already an address); IPv4-mapped IPv6 shown as IPv4."""
    if not peer:
        return None
    if peer.startswith("::ffff:") and "." in peer:
        return peer[7:]
    return peer[:45]
