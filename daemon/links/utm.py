"""UTM parameters appended to landing URLs (pure).

The campaign's ``landing_page.utm`` mapping ``{source: topslot, medium: "{channel}"}`` becomes
``utm_source=topslot&utm_medium=email``: ``utm_`` is added unless the name already starts with it,
and ``{channel}`` is replaced by the channel (``email``, ``sms``, ``im``).

Rules: the URL's existing query is kept exactly as written, in order, and its fragment stays at the
end. **The campaign wins**: a parameter the URL already has under the same name (say
``utm_source=old``) is dropped and the campaign's value appended, so no parameter is ever
duplicated and reports always see the campaign's attribution. Values are percent-encoded (UTF-8,
a space as ``%20``); the result is normalised by ``topslot.links.urls.normalise_url`` (IDNA host,
default port dropped, non-ASCII characters percent-encoded).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from topslot.links.urls import InvalidLink, normalise_url

CHANNEL_PLACEHOLDER = "{channel}"


def utm_params(utm: Mapping[str, str], channel: str) -> list[tuple[str, str]]:
    """The campaign's UTM mapping as ``(utm_name, value)`` pairs for one channel, in YAML order."""
    pairs: dict[str, str] = {}
    for key, value in utm.items():
        name = key if key.startswith("utm_") else f"utm_{key}"
        pairs[name] = value.replace(CHANNEL_PLACEHOLDER, channel)
    return list(pairs.items())


def with_utm(url: str, utm: Mapping[str, str], channel: str) -> str:
    """``url`` normalised, with the campaign's UTM parameters appended (replacing same-named ones)."""
    params = utm_params(utm, channel)
    if not params:
        return normalise_url(url)
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise InvalidLink(f"not a valid link: {exc}") from None
    names = {name for name, _ in params}
    kept = [seg for seg in parts.query.split("&") if seg and _param_name(seg) not in names]
    added = [f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params]
    return normalise_url(urlunsplit(parts._replace(query="&".join(kept + added))))


def _param_name(segment: str) -> str:
    return unquote_plus(segment.partition("=")[0])
