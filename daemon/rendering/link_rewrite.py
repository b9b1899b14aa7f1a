"""Send every http(s) link of a template through ``track()``, by rewriting the template once.

Done on the placeholder-protected source at compile time, so a message pays nothing for it:

- ``href="https://literal"`` becomes ``href="{{ track('https://literal') }}"``;
- ``href="{{ track(...) }}"`` and ``href="{{ unsubscribe_url }}"`` stay as they are;
- any other href holding Jinja (``{{ landing_url }}``, ``https://x/?c={{ coupon }}``, ``{% if %}``)
  is wrapped in ``{% filter tracked_href %}...{% endfilter %}``: the rendered value is tracked when
  it is an http(s) URL other than the message's unsubscribe URL;
- ``mailto:``, ``tel:``, ``#anchors`` and relative links are left alone.

In a text template, literal URLs and a bare ``{{ landing_url }}`` become ``track()`` calls.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

from jinja2 import pass_context
from markupsafe import Markup

from topslot.rendering.placeholders import PLACEHOLDER, Protected

TRACKED_HREF_FILTER = "tracked_href"
_COMMENT_OR_LINK = re.compile(r"""<!--.*?-->|<(?:a|area)\b(?:[^>"']|"[^"]*"|'[^']*')*>""", re.DOTALL | re.IGNORECASE)
_HREF = re.compile(r"""(?P<lead>\shref\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')""", re.IGNORECASE)
_HTTP = re.compile(r"^https?://", re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""
_SAFE_EXPR = re.compile(r"^\{\{-?\s*(?:track\s*\(.*\)|unsubscribe_url)\s*-?\}\}$", re.DOTALL)
_LANDING_EXPR = re.compile(r"^\{\{(-?)\s*landing_url\s*(-?)\}\}$")


class _Tags:
    """The protected source's tags plus the ones added while rewriting."""

    def __init__(self, protected: Protected):
        self.tags = list(protected.tags)
        self.kinds = list(protected.kinds)

    def add(self, kind: str, tag: str) -> str:
        self.tags.append(tag)
        self.kinds.append(kind)
        return f"<!--T{kind}:{len(self.tags) - 1}-->"

    def replace(self, index: int, tag: str) -> str:
        self.tags[index] = tag
        return f"<!--T{self.kinds[index]}:{index}-->"

    def result(self, text: str) -> Protected:
        return Protected(text, tuple(self.tags), tuple(self.kinds))


def jinja_string(value: str) -> str:
    """A Jinja string literal for ``value``."""
    return repr(value)


def rewrite_html_links(protected: Protected) -> Protected:
    """Rewrite the hrefs of every ``<a>``/``<area>`` in a protected HTML source (see module doc)."""
    tags = _Tags(protected)

    def link(match: re.Match[str]) -> str:
        tag = match.group(0)
        if tag.startswith("<!--"):
            return tag
        return _HREF.sub(lambda m: _rewrite_href(m, tags, protected), tag, count=1)

    return tags.result(_COMMENT_OR_LINK.sub(link, protected.source))


def _rewrite_href(match: re.Match[str], tags: _Tags, protected: Protected) -> str:
    quote = '"' if match.group("dq") is not None else "'"
    value = match.group("dq") if quote == '"' else match.group("sq")
    new = _new_href(value.strip(), tags, protected)
    return f"{match.group('lead')}{quote}{value if new is None else new}{quote}"


def _new_href(value: str, tags: _Tags, protected: Protected) -> str | None:
    found = list(PLACEHOLDER.finditer(value))
    if not found:
        url = html.unescape(value)
        if not _HTTP.match(url):
            return None
        return tags.add("E", "{{ track(" + jinja_string(url) + ") }}")
    if len(found) == 1 and found[0].span() == (0, len(value)):
        only = protected.tag(int(found[0].group("index")))
        if _SAFE_EXPR.match(only):
            return None
    return tags.add("S", "{% filter " + TRACKED_HREF_FILTER + " %}") + value + tags.add("S", "{% endfilter %}")


def rewrite_text_links(protected: Protected, *, bare_landing: bool = True) -> Protected:
    """In a protected text source: literal URLs and (``bare_landing``) a bare ``{{ landing_url }}``
    → ``track()`` calls."""
    tags = _Tags(protected)
    parts: list[str] = []
    last = 0
    for match in PLACEHOLDER.finditer(protected.source):
        parts.append(_track_text_urls(protected.source[last : match.start()], tags))
        index = int(match.group("index"))
        landing = _LANDING_EXPR.match(protected.tags[index])
        if match.group("kind") == "E" and landing and bare_landing:
            parts.append(
                tags.replace(index, "{{" + landing.group(1) + " track(landing_url) " + landing.group(2) + "}}")
            )
        else:
            parts.append(match.group(0))
        last = match.end()
    parts.append(_track_text_urls(protected.source[last:], tags))
    return tags.result("".join(parts))


def _track_text_urls(text: str, tags: _Tags) -> str:
    def one(match: re.Match[str]) -> str:
        url = match.group(0)
        stripped = url.rstrip(_TRAILING)
        if stripped.count("(") > stripped.count(")") and url[len(stripped) :].startswith(")"):
            stripped += ")"  # a URL with parentheses, such as a wiki link
        tail = url[len(stripped) :]
        return tags.add("E", "{{ track(" + jinja_string(stripped) + ") }}") + tail

    return _TEXT_URL.sub(one, text)


@pass_context
def tracked_href(context: Any, value: Any) -> str:
    """Filter: the rendered href, tracked when it is an http(s) URL other than the unsubscribe URL."""
    url = (value.unescape() if isinstance(value, Markup) else html.unescape(str(value))).strip()
    if not _HTTP.match(url) or url == context.get("unsubscribe_url"):
        return url
    track: Callable[[str], str] = context["track"]
    return track(url)
