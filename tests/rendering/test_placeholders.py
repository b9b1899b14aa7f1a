"""Jinja tags hidden behind comment placeholders and put back exactly."""

from __future__ import annotations

import pytest

from topslot.rendering.placeholders import placeholder, protect, restore

SOURCE = """<table>{% for r in rows %}<tr><td title="{{ r.title }}">{{ r.name }}</td></tr>{% endfor %}</table>
{# a note #}<p>{{ "}}" ~ '%}' }}</p>{% raw %}{{ not jinja }}{% endraw %}{%- if x -%}y{%- endif -%}"""


def test_every_tag_becomes_a_placeholder_and_comes_back() -> None:
    protected = protect(SOURCE)

    assert "{{" not in protected.source and "{%" not in protected.source and "{#" not in protected.source
    assert protected.kinds == ("S", "E", "E", "S", "E", "S", "S", "S")
    assert protected.tags[4] == """{{ "}}" ~ '%}' }}"""
    assert protected.tags[5] == "{% raw %}{{ not jinja }}{% endraw %}"
    assert restore(protected.source, protected) == SOURCE.replace("{# a note #}", "")


def test_escaped_placeholders_are_restored_too() -> None:
    protected = protect("<title>{{ t }}</title>")
    escaped = protected.source.replace("<!--", "&lt;!--").replace("-->", "--&gt;")

    assert restore(escaped, protected) == "<title>{{ t }}</title>"


def test_a_lost_or_copied_tag_is_an_error() -> None:
    protected = protect("a{% if x %}b{% endif %}")
    with pytest.raises(ValueError, match="could not be kept in place.*endif"):
        restore(protected.source.replace(placeholder("S", 1), ""), protected)
    with pytest.raises(ValueError, match="could not be kept in place"):
        restore(protected.source + placeholder("S", 0), protected)


def test_expressions_may_be_dropped_only_when_allowed() -> None:
    protected = protect("{% if x %}<a title='{{ t }}'>{% endif %}")
    without_title = protected.source.replace(placeholder("E", 1), "")

    assert restore(without_title, protected, may_drop_expressions=True) == "{% if x %}<a title=''>{% endif %}"
    with pytest.raises(ValueError):
        restore(without_title, protected)
