"""Hide Jinja tags behind HTML comments so an HTML tool can rework a template's source safely.

An HTML parser moves text it finds in odd places (text inside ``<table>`` is "foster-parented"
before the table), so a raw ``{% for %}`` between ``<table>`` and ``<tr>`` would come out of CSS
inlining somewhere else. Comments are kept exactly where they are, also inside tables, so each
Jinja tag becomes ``<!--TS:n-->`` (statement) or ``<!--TE:n-->`` (expression) and is put back
afterwards. Inside attribute values a comment is plain text and survives as well.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# {{ expr }}, {% stmt %}, {# comment #}, with quoted strings inside a tag skipped over;
# {% raw %}...{% endraw %} is one statement placeholder (its content is not Jinja).
_TAG = re.compile(
    r"""
    (?P<raw>\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\})
  | (?P<expr>\{\{(?:[^}'"]|'[^']*'|"[^"]*"|\}(?!\}))*\}\})
  | (?P<stmt>\{%(?:[^%'"]|'[^']*'|"[^"]*"|%(?!\}))*%\})
  | (?P<comment>\{\#.*?\#\})
    """,
    re.DOTALL | re.VERBOSE,
)
# a placeholder as written, or as an HTML serializer may escape it in text/attribute values
PLACEHOLDER = re.compile(r"(?:<|&lt;)!--T(?P<kind>[SE]):(?P<index>\d+)--(?:>|&gt;)")


@dataclass(frozen=True)
class Protected:
    """A template source with its Jinja tags replaced by placeholders, and the tags to put back."""

    source: str
    tags: tuple[str, ...]
    kinds: tuple[str, ...]  # "S" (statement) or "E" (expression) per tag

    def tag(self, index: int) -> str:
        return self.tags[index]


def protect(source: str) -> Protected:
    """Replace every Jinja tag with a comment placeholder (Jinja comments are dropped)."""
    tags: list[str] = []
    kinds: list[str] = []

    def hide(match: re.Match[str]) -> str:
        if match.lastgroup == "comment":
            return ""
        kind = "E" if match.lastgroup == "expr" else "S"
        tags.append(match.group(0))
        kinds.append(kind)
        return f"<!--T{kind}:{len(tags) - 1}-->"

    return Protected(_TAG.sub(hide, source), tuple(tags), tuple(kinds))


def placeholder(kind: str, index: int) -> str:
    return f"<!--T{kind}:{index}-->"


def restore(text: str, protected: Protected, *, may_drop_expressions: bool = False) -> str:
    """Put every Jinja tag back; each must appear exactly once (else the HTML tool lost or copied
    one). ``may_drop_expressions``: expressions may be missing (a text version of the HTML drops
    attribute values), statements never (the template's blocks must stay balanced)."""
    counts: Counter[int] = Counter()

    def put_back(match: re.Match[str]) -> str:
        index = int(match.group("index"))
        counts[index] += 1
        return protected.tags[index]

    result = PLACEHOLDER.sub(put_back, text)
    lost = [i for i, kind in enumerate(protected.kinds) if not counts[i] and (kind == "S" or not may_drop_expressions)]
    doubled = sorted(i for i, n in counts.items() if n > 1)
    if lost or doubled:
        where = ", ".join(repr(protected.tags[i]) for i in (lost or doubled)[:3])
        raise ValueError(
            f"a Jinja tag could not be kept in place ({where}); put Jinja tags between HTML tags or "
            "inside attribute values, not among a tag's attributes or inside <style>"
        )
    return result
