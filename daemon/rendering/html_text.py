"""A plain-text version of an HTML email (stdlib only), that keeps Jinja placeholders in place.

Run once per campaign on the placeholder-protected HTML template (see ``placeholders``), so the
text part is itself a template and costs nothing extra per message. Links become ``text <url>``;
hidden elements (``display:none``: preheaders), ``<head>``, ``<style>`` and ``<script>`` are left
out; blocks, rows and cells go on their own lines; ``<li>`` gets a ``- ``. Statement placeholders
are kept wherever they appear (also in skipped parts) so the template's blocks stay balanced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html.parser import HTMLParser

from topslot.rendering.placeholders import PLACEHOLDER

_SKIP = {"head", "style", "script", "title", "template", "noscript"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_BLOCK = {
    "address", "article", "aside", "blockquote", "div", "dl", "dt", "dd", "fieldset", "figure", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "li", "main", "nav", "ol", "p", "pre", "section",
    "table", "tbody", "thead", "tfoot", "tr", "td", "th", "ul", "center",
}  # fmt: skip
_PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "ul", "ol", "pre"}
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_BREAK = "\x00"  # one line break; two in a row make a blank line


_CLOSING = re.compile(r"^\{%-?\s*(?:end\w*|else|elif)\b")


class _TextWriter(HTMLParser):
    """Line breaks are owed (``pending``) and written only before the next text, so a loop's
    body never ends with a break and its items are not separated by blank lines."""

    def __init__(self, statements: dict[str, str]) -> None:
        super().__init__(convert_charrefs=True)
        self.statements = statements  # placeholder → its Jinja tag (to tell {% end.. %} apart)
        self.pending = 0
        self.out: list[str] = []
        self.skip_depth = 0  # >0 while inside a skipped element
        self.open: list[tuple[str, bool, str | None]] = []  # (tag, skipped, href)
        self.pre = 0

    # -- helpers
    def emit(self, text: str) -> None:
        if not self.skip_depth and text:
            if self.pending:
                self.out.append(_BREAK * self.pending)
                self.pending = 0
            self.out.append(text)

    def statement(self, placeholder: str) -> None:
        """Breaks owed before an opening statement go before it; a closing one carries them past."""
        if self.pending and not _CLOSING.match(self.statements.get(placeholder, "")):
            self.out.append(_BREAK * self.pending)
            self.pending = 0
        self.out.append(placeholder)

    def emit_statements(self, text: str) -> None:
        """Statement placeholders found in attributes or skipped parts still go out."""
        for match in PLACEHOLDER.finditer(text):
            if match.group("kind") == "S":
                self.statement(match.group(0))

    def breaks(self, count: int) -> None:
        if not self.skip_depth and self.out:
            self.pending = max(self.pending, count)

    # -- parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and not (tag == "a" and name == "href"):  # a link's href goes out at its end
                self.emit_statements(value)
        values = {name: value or "" for name, value in attrs}
        if tag in _VOID:
            self._void(tag, values)
            return
        skipped = tag in _SKIP or bool(_HIDDEN.search(values.get("style", "")))
        if tag in _BLOCK:
            self.breaks(2 if tag in _PARAGRAPH else 1)
        if tag == "li":
            self.emit("- ")
        if tag == "pre":
            self.pre += 1
        self.open.append((tag, skipped, values.get("href") if tag == "a" else None))
        if skipped:
            self.skip_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def _void(self, tag: str, values: dict[str, str]) -> None:
        if tag == "br":
            self.breaks(1)
        elif tag == "hr":
            self.breaks(1)
            self.emit("-" * 40)
            self.breaks(1)
        elif tag == "img" and values.get("alt", "").strip() and not _HIDDEN.search(values.get("style", "")):
            self.emit(values["alt"].strip())

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or not any(t == tag for t, _, _ in self.open):
            return
        while self.open:
            name, skipped, href = self.open.pop()
            if name == "a" and href:
                self._link_target(href)
            if skipped:
                self.skip_depth -= 1
            if name == "pre":
                self.pre -= 1
            if name in _BLOCK:
                self.breaks(2 if name in _PARAGRAPH else 1)
            if name == tag:
                break

    def _link_target(self, href: str) -> None:
        href = href.strip()
        if self.skip_depth or href.startswith("#") or href.lower().startswith(("mailto:", "tel:", "javascript:")):
            self.emit_statements(href)
        else:
            space = "" if self.out and self.out[-1][-1:].isspace() else " "
            self.emit(f"{space}<{href}>")

    def handle_data(self, data: str) -> None:
        data = data.replace("\xa0", " ")  # &nbsp; is layout, not text
        self.emit(data if self.pre else _SPACES.sub(" ", data))

    def handle_comment(self, data: str) -> None:
        text = f"<!--{data}-->"
        match = PLACEHOLDER.fullmatch(text)
        if match is None:
            return
        if match.group("kind") == "S":
            self.statement(text)
        else:
            self.emit(text)


def html_to_text(html: str, tags: Mapping[str, str] | None = None) -> str:
    """Plain text of ``html``: paragraphs separated by a blank line, no trailing spaces.

    ``tags``: the Jinja tag behind each statement placeholder (``<!--TS:n-->`` → ``{% ... %}``)."""
    writer = _TextWriter(dict(tags or {}))
    writer.feed(html)
    writer.close()
    return tidy("".join(writer.out).replace(_BREAK, "\n"))


_LINE_EDGES = re.compile(r"[ \t]*\n[ \t]*")
_BLANKS = re.compile(r"\n{3,}")


def tidy(text: str) -> str:
    """Trim spaces around line breaks and keep at most one blank line in a row."""
    return _BLANKS.sub("\n\n", _LINE_EDGES.sub("\n", text)).strip() + "\n"
