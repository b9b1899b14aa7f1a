"""Where a click goes: the stored destination with the click id ``tsid`` appended (pure).

The destination always comes from the ``links`` table (written by the dispatcher from the
campaign's own templates, normalised by ``topslot.links.urls.normalise_url``), never from the
request. ``tsid`` carries the click token itself, so the shop can post it back with an order
(``POST /conversions``) and the click is verified again there. An existing ``tsid`` parameter is
replaced; the rest of the query and the fragment stay as they are.
"""

from __future__ import annotations

import re
from functools import lru_cache

CLICK_ID_PARAM = "tsid"
# What a normalised URL may contain: printable ASCII without space, quotes, angle brackets or backslash.
_SAFE_URL = re.compile(r"^https?://[!#-;=?-\[\]-~]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


class UnsafeDestination(ValueError):
    """A stored destination that must not be redirected to (never expected: answer 404)."""


def with_click_id(url: str, token: str) -> str:
    """``url`` with ``tsid=token`` as its last query parameter (before any fragment)."""
    if not _TOKEN.fullmatch(token):
        raise UnsafeDestination("the token is not a safe URL part")
    before, after = _around_click_id(url)
    return before + token + after


@lru_cache(maxsize=4096)  # a campaign's few destinations, clicked again and again
def _around_click_id(url: str) -> tuple[str, str]:
    """What comes before the click id in ``with_click_id(url, ...)`` and what after."""
    if not _SAFE_URL.fullmatch(url):
        raise UnsafeDestination("the destination is not a safe absolute http(s) URL")
    base, hash_mark, fragment = url.partition("#")
    path, _, query = base.partition("?")
    kept = [p for p in query.split("&") if p and p.partition("=")[0] != CLICK_ID_PARAM]
    kept.append(f"{CLICK_ID_PARAM}=")
    return f"{path}?{'&'.join(kept)}", f"{hash_mark}{fragment}"
