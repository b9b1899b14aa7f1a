"""URL normalisation and the deterministic link key (pure).

``normalise_url`` gives the one ASCII spelling topslot stores, redirects to and hashes: scheme and
host lower-cased, an international host name in IDNA (punycode), the scheme's default port dropped,
an empty path written ``/``, and every character that may not appear in a URL percent-encoded as
UTF-8 (a lone ``%`` becomes ``%25``; existing ``%XX`` escapes are kept as written). Nothing else
changes: query order, case in the path and query, and the fragment stay the author's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from urllib.parse import quote, urlsplit, urlunsplit

import idna

from topslot.errors import TopslotError

MAX_URL_CHARS = 4096
LINK_KEY_HEX = 16  # 64 bits of SHA-256: collision odds ~3e-8 even at a million links per campaign
DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "-._~!$&'()*+,;=:@/%"
_QUERY_SAFE = _PATH_SAFE + "?"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ASCII_HOST = re.compile(r"^[a-z0-9._-]+$")


class InvalidLink(TopslotError, ValueError):
    """A link that cannot be tracked or sent: not absolute http(s), no host, credentials, bad port."""


def normalise_url(url: str) -> str:
    """The canonical ASCII form of an absolute http(s) URL; ``InvalidLink`` when it is not one."""
    if not isinstance(url, str):
        raise InvalidLink(f"a link must be text, got {type(url).__name__}")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise InvalidLink(f"a link is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise InvalidLink(f"only http(s) links can be tracked, got {_short(url)!r}")
        if "@" in parts.netloc:
            raise InvalidLink(f"a link must not carry a user name or password: {_short(url)!r}")
        port = parts.port  # ValueError when not a number in 0..65535
        host = _ascii_host(parts.hostname or "", parts.netloc)
        netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
        path = _encode(parts.path, _PATH_SAFE) or "/"
        query = _encode(parts.query, _QUERY_SAFE)
        fragment = _encode(parts.fragment, _QUERY_SAFE)
    except InvalidLink:
        raise
    except (ValueError, UnicodeError, idna.IDNAError) as exc:
        raise InvalidLink(f"not a valid link {_short(url)!r}: {exc}") from None
    return urlunsplit((scheme, netloc, path, query, fragment))


def link_key(normalised: str) -> str:
    """16 hex digits naming a destination within a campaign: the same URL always gives the same key."""
    return hashlib.sha256(normalised.encode("ascii")).hexdigest()[:LINK_KEY_HEX]


def _ascii_host(host: str, netloc: str) -> str:
    if not host:
        raise InvalidLink("a link needs a host name")
    if netloc.startswith("["):
        return f"[{ipaddress.IPv6Address(host).compressed}]"
    if not _ASCII_HOST.fullmatch(host):
        host = idna.encode(host, uts46=True).decode("ascii")
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(0 < len(label) <= 63 for label in labels):
        raise InvalidLink(f"not a valid host name: {host!r}")
    for label in labels:
        if label.startswith("xn--"):
            idna.decode(label)  # IDNAError for punycode that decodes to nothing valid
    return host


def _encode(text: str, safe: str) -> str:
    return quote(_LONE_PERCENT.sub("%25", text), safe=safe)


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."
