"""Turn a campaign's email template sources into the sources actually compiled, once per load.

HTML: Jinja tags hidden behind placeholders → CSS inlined (css-inline) → hrefs tracked → tags put
back. Text: the given text template with its links tracked, or, when there is none, a text version
derived from the prepared HTML (so it is a template too, rendered per message at template speed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import css_inline

from topslot.rendering.html_text import html_to_text
from topslot.rendering.link_rewrite import rewrite_html_links, rewrite_text_links
from topslot.rendering.placeholders import Protected, placeholder, protect, restore

_INLINER = css_inline.CSSInliner(
    keep_at_rules=True,  # @media rules cannot be inlined: keep them in a <style> block
    keep_link_tags=True,
    load_remote_stylesheets=False,  # no I/O while loading campaigns
)


class SourceError(ValueError):
    """An email template's source cannot be prepared (CSS, or a Jinja tag in an impossible place)."""


@dataclass(frozen=True, slots=True)
class EmailSources:
    html: str
    text: str
    text_derived: bool  # True: the text part was derived from the HTML


def prepare_html(source: str, *, inline_css: bool = True) -> Protected:
    """The protected HTML with CSS inlined and links tracked (still protected: see ``restore``)."""
    protected = protect(source)
    html = protected.source
    if inline_css:
        try:
            html = _INLINER.inline(html)
        except (css_inline.InlineError, ValueError) as exc:
            raise SourceError(f"CSS could not be inlined: {exc}") from None
        html = ascii_markup(html)
    return rewrite_html_links(Protected(html, protected.tags, protected.kinds))


_RAW_TEXT = re.compile(r"(<(style|script)\b.*?</\2\s*>)", re.DOTALL | re.IGNORECASE)


def ascii_markup(html: str) -> str:
    """Non-ASCII characters of the markup as character references (``·`` → ``&#183;``), except in
    ``<style>``/``<script>`` where references mean nothing: an all-ASCII HTML part is sent as
    7bit, without quoted-printable's cost per message."""
    if html.isascii():
        return html
    pieces = _RAW_TEXT.split(html)
    out: list[str] = []
    for i in range(0, len(pieces), 3):
        out.append(pieces[i].encode("ascii", "xmlcharrefreplace").decode("ascii"))
        if i + 1 < len(pieces):
            out.append(pieces[i + 1])
    return "".join(out)


def prepare_email_sources(html_source: str, text_source: str | None, *, inline_css: bool = True) -> EmailSources:
    """The HTML and text template sources to compile for a campaign."""
    prepared = prepare_html(html_source, inline_css=inline_css)
    try:
        html = restore(prepared.source, prepared)
        if text_source is None:
            kinds = enumerate(zip(prepared.kinds, prepared.tags, strict=True))
            statements = {placeholder(kind, i): tag for i, (kind, tag) in kinds if kind == "S"}
            text = html_to_text(prepared.source, statements)
            derived = rewrite_text_links(Protected(text, prepared.tags, prepared.kinds), bare_landing=False)
            return EmailSources(html, restore(derived.source, derived, may_drop_expressions=True), True)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    rewritten = rewrite_text_links(protect(text_source))
    return EmailSources(html, restore(rewritten.source, rewritten), False)


def prepare_text_source(source: str) -> str:
    """An SMS/IM body source with its literal URLs and bare ``landing_url`` tracked."""
    text = rewrite_text_links(protect(source))
    return restore(text.source, text)
