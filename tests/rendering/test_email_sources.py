"""Preparing email template sources: CSS inlined without moving Jinja tags, links tracked, text derived."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import css_inline
import pytest

from topslot.rendering.email_sources import SourceError, prepare_email_sources, prepare_text_source
from topslot.rendering.html_text import tidy
from topslot.rendering.link_rewrite import TRACKED_HREF_FILTER, tracked_href
from topslot.templating import make_environment, sample_context_for

TABLE = """<!DOCTYPE html><html><head><style>td { color: red } .big { font-size: 20px }
@media (max-width: 600px) { td { color: blue } }</style></head><body>
<table>{% for name in names %}<tr><td class="big">{{ name }}</td></tr>{% endfor %}</table>
<p>Unsubscribe: <a href="{{ unsubscribe_url }}">here</a></p></body></html>"""


@pytest.fixture
def env(tmp_path: Path):
    environment = make_environment(tmp_path)
    environment.filters[TRACKED_HREF_FILTER] = tracked_href
    return environment


def compile_html(env, source: str):
    return env.template_class.from_code(env, env.compile(source, "t.html", None), env.make_globals(None), None)


def compile_text(env, source: str):
    return env.template_class.from_code(env, env.compile(source, "t.txt", None), env.make_globals(None), None)


@pytest.fixture
def ctx():
    return {**sample_context_for("c1", "Camp", "https://shop.example.com/p?a=1&b=2"), "names": ["Ann", "Bo", "Cy"]}


class _Cells(HTMLParser):
    """Collects (path of open tags) for every <td> text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.cells: list[tuple[str, tuple[str, ...]]] = []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "td" and data.strip():
            self.cells.append((data.strip(), tuple(self.stack)))


def test_naive_inlining_moves_the_loop_out_of_the_table() -> None:
    naive = css_inline.inline(TABLE)
    assert naive.index("{% for name in names %}") < naive.index("<table>")  # foster-parented: broken


def test_jinja_tags_stay_in_place_through_css_inlining(env, ctx) -> None:
    sources = prepare_email_sources(TABLE, None)

    html = compile_html(env, sources.html).render(ctx)

    cells = _Cells()
    cells.feed(html)
    assert [text for text, _ in cells.cells] == ["Ann", "Bo", "Cy"]
    assert all("table" in path for _, path in cells.cells)
    assert html.count('<td class="big" style="color: red;font-size: 20px;">') == 3
    assert "@media (max-width: 600px)" in html  # at-rules cannot be inlined: kept in <style>


def test_hrefs_are_tracked_except_unsubscribe_mailto_and_anchors(env, ctx) -> None:
    source = """<html><body>
<a href="https://shop.example.com/a?x=1&amp;y=2">literal</a>
<a href="{{ landing_url }}">landing</a>
<a href="https://shop.example.com/c/{{ coupon }}?z=&quot;">mixed</a>
<a href="{% if coupon %}https://shop.example.com/yes{% else %}https://shop.example.com/no{% endif %}">stmt</a>
<a href="{{ track('https://shop.example.com/own') }}">own</a>
<a href="{{ unsubscribe_url }}">unsubscribe</a>
<a href="mailto:help@shop.example.com">mail</a> <a href="#top">top</a> <a href="/relative">rel</a>
</body></html>"""
    html = compile_html(env, prepare_email_sources(source, None).html).render(ctx)

    hrefs = re.findall(r'href="([^"]*)"', html)
    track = ctx["track"]
    assert hrefs == [
        track("https://shop.example.com/a?x=1&y=2").replace("&", "&amp;"),
        track(ctx["landing_url"]).replace("&", "&amp;"),
        track('https://shop.example.com/c/SAMPLE7K2Q9X?z="').replace("&", "&amp;"),
        track("https://shop.example.com/yes"),
        track("https://shop.example.com/own"),
        ctx["unsubscribe_url"],
        "mailto:help@shop.example.com",
        "#top",
        "/relative",
    ]


def test_text_part_is_derived_from_the_html_with_links(env, ctx) -> None:
    source = """<html><head><title>{{ campaign.name }}</title></head><body>
<div style="display:none">preheader {{ coupon }}</div>
<h1>Hello {{ contact.first_name }} &amp; co</h1><p>Your code: <b>{{ coupon }}</b></p>
<ul>{% for name in names %}<li>{{ name }}</li>{% endfor %}</ul>
<p><a href="{{ landing_url }}">Shop now</a> or <a href="{{ unsubscribe_url }}">unsubscribe</a></p>
</body></html>"""
    sources = prepare_email_sources(source, None)
    assert sources.text_derived

    text = tidy(compile_text(env, sources.text).render(ctx))  # as the renderer does for derived text

    assert text == (
        "Hello Mei & co\n\nYour code: SAMPLE7K2Q9X\n\n- Ann\n- Bo\n- Cy\n\n"
        f"Shop now <{ctx['track'](ctx['landing_url'])}> or unsubscribe <{ctx['unsubscribe_url']}>\n"
    )


def test_text_template_links_are_tracked(env, ctx) -> None:
    source = (
        "Hi {{ contact.first_name }}, see https://shop.example.com/x. Or {{ landing_url }}\nBye: {{ unsubscribe_url }}"
    )

    sources = prepare_email_sources("<p>{{ unsubscribe_url }}</p>", source)
    text = compile_text(env, sources.text).render(ctx)

    track = ctx["track"]
    assert not sources.text_derived
    assert text == (
        f"Hi Mei, see {track('https://shop.example.com/x')}. Or {track(ctx['landing_url'])}\n"
        f"Bye: {ctx['unsubscribe_url']}"
    )
    assert prepare_text_source("Go (https://a.example/x_(y)) now") == "Go ({{ track('https://a.example/x_(y)') }}) now"


def test_jinja_among_a_tags_attributes_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="could not be kept in place"):
        prepare_email_sources('<html><body><td {% if x %}class="a"{% endif %}>x</td></body></html>', None)
