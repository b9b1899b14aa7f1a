"""The tracking server's URLs (pure): ``/c/{token}`` clicks, ``/s/{code}`` short clicks (SMS:
``topslot.links.short``), ``/o/{token}.gif`` opens, ``/u/{token}`` unsubscribes, and the ``mailto:``
unsubscribe address.

No destination ever appears in a tracking URL (no open redirect): a click token carries a link key,
and the tracking server looks the destination up per campaign in the ``links`` table.

The tracking base (``settings.tracking_base_url``) must be https, because the unsubscribe link is
the RFC 8058 one-click ``List-Unsubscribe`` URL and mailbox providers require https there. Plain
http is accepted only for a loopback host (``127.0.0.1``, ``::1``, ``localhost``: the demo).
The ``mailto:`` unsubscribe goes to ``unsubscribe+{token}@{domain}``; the domain defaults to the
tracking host (which must then accept mail for that local part, preserving case as RFC 5321 says).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from topslot.errors import TopslotError
from topslot.links.keys import Keyring
from topslot.links.short import verify_short
from topslot.links.tokens import Kind, MalformedToken, TokenClaims, sign, verify
from topslot.links.urls import InvalidLink, normalise_url

ROUTES: dict[Kind, str] = {"click": "c", "open": "o", "unsubscribe": "u"}
SHORT_ROUTE = "s"  # a short click code: a click like /c, for SMS
OPEN_SUFFIX = ".gif"
MAILTO_LOCAL = "unsubscribe"
MAX_MAILTO_LOCAL = 64  # RFC 5321 limit on a local part
_PATH_RE = re.compile(r"^/([cous])/([A-Za-z0-9_-]{1,80})(\.gif)?$")
_ROUTE_KINDS: dict[str, Kind] = {route: kind for kind, route in ROUTES.items()}
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class InvalidTrackingBase(TopslotError, ValueError):
    """``tracking_base_url`` cannot serve tracked links (not https, query, credentials, ...)."""


@dataclass(frozen=True, slots=True)
class TrackingBase:
    """A validated tracking base: ``url`` without a trailing slash, ``host`` in ASCII."""

    url: str
    host: str

    @classmethod
    def parse(cls, url: str) -> TrackingBase:
        try:
            normal = normalise_url(url)
        except InvalidLink as exc:
            raise InvalidTrackingBase(f"tracking_base_url: {exc}") from None
        parts = urlsplit(normal)
        if parts.query or parts.fragment:
            raise InvalidTrackingBase("tracking_base_url must not have a query or fragment")
        host = parts.hostname or ""
        if parts.scheme != "https" and not _is_loopback(host):
            raise InvalidTrackingBase(
                f"tracking_base_url must be https (one-click unsubscribe, RFC 8058); http only for loopback, "
                f"got {normal}"
            )
        return cls(url=normal.rstrip("/"), host=host)

    def route_prefixes(self) -> tuple[str, ...]:
        """URL prefixes that are already tracking URLs (never tracked again)."""
        return tuple(f"{self.url}/{route}/" for route in (*ROUTES.values(), SHORT_ROUTE))


def tracked_url(base: TrackingBase, token: str) -> str:
    return f"{base.url}/c/{token}"


def short_url(base: TrackingBase, code: str) -> str:
    return f"{base.url}/{SHORT_ROUTE}/{code}"


def open_pixel_url(base: TrackingBase, token: str) -> str:
    return f"{base.url}/o/{token}{OPEN_SUFFIX}"


def unsubscribe_url(base: TrackingBase, token: str) -> str:
    return f"{base.url}/u/{token}"


def mailto_domain(base: TrackingBase, domain: str | None = None) -> str:
    """The domain of ``mailto:`` unsubscribes: ``domain`` if given, else the tracking host
    (an IP address becomes an address literal such as ``[127.0.0.1]``)."""
    if domain is not None:
        ascii_domain = domain.strip().lower().rstrip(".")
        if not _DOMAIN_RE.fullmatch(ascii_domain):
            raise InvalidTrackingBase(f"not a mail domain: {domain!r}")
        return ascii_domain
    host = base.host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{ip}]" if ip.version == 4 else f"[IPv6:{ip}]"


def unsubscribe_mailto(domain: str, token: str) -> str:
    local = f"{MAILTO_LOCAL}+{token}"
    if len(local) > MAX_MAILTO_LOCAL:
        raise ValueError(f"mailto local part longer than {MAX_MAILTO_LOCAL} characters: use a shorter key id")
    return f"mailto:{local}@{domain}"


def read_tracking_path(path: str, keyring: Keyring) -> TokenClaims:
    """The claims of a tracking request path (relative to the tracking base, without its query):
    ``/c/TOKEN``, ``/s/CODE`` (a click), ``/o/TOKEN.gif`` or ``/u/TOKEN``. The token's kind must
    match the route; any other shape (extra segments, a missing or misplaced ``.gif``, encoded
    characters) is refused."""
    match = _PATH_RE.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise MalformedToken("not a tracking path")
    route, token, suffix = match.groups()
    if route == SHORT_ROUTE:
        if suffix is not None:
            raise MalformedToken("not a tracking path")
        return verify_short(token, keyring)
    kind = _ROUTE_KINDS[route]
    if (suffix is not None) != (kind == "open"):
        raise MalformedToken("not a tracking path")
    return verify(token, keyring, kind)


def click_id(path: str, claims: TokenClaims, keyring: Keyring) -> str:
    """The click token a verified click's redirect carries as ``tsid`` (what ``POST /conversions``
    verifies): the ``/c/`` token itself, or for a ``/s/`` short code the click token with the same
    claims, signed now with the code's key (deterministic: the same code always gives the same)."""
    if path.startswith(f"/{SHORT_ROUTE}/"):
        return sign(keyring, "click", claims.delivery_id, claims.link_key, key_id=claims.key_id)
    return path[3:]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
