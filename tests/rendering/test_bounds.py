"""Template bombs: each one stops with a clear error instead of eating the daemon (how fast: bench/guards.py)."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import pytest

from topslot.config.campaigns import load_campaigns
from topslot.rendering.bounds import BoundedTemplate, RenderLimits, render_bounded, render_checked
from topslot.templating import RenderLimitError, make_environment, sample_context_for

REPO = Path(__file__).resolve().parents[2]
QUICK = RenderLimits(max_seconds=0.3, max_chars=100_000)


@pytest.fixture
def env(tmp_path: Path):
    return make_environment(tmp_path)


@pytest.fixture
def ctx():
    return sample_context_for("c1", "Camp", "https://shop.example.com/")


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a'.center(10**9) }}",
        "{{ 'a'|center(10**9) }}",
        "{{ '%999999999s' % 'a' }}",
        "{{ '{:>999999999}'.format('a') }}",
        "{{ 'x'|indent(10**9) }}",
        "{{ 'a\tb'.expandtabs(10**9) }}",
        "{{ ('a' * 100000)|replace('a', 'bbbbbbbbbbbbbbbbbbbbbbb') }}",
        "{% set s = 'a' * 100000 %}{{ [s, s, s, s, s, s, s, s, s, s, s]|join }}",
        "{% set s = 'a' * 100000 %}{{ ''.join([s, s, s, s, s, s, s, s, s, s, s]) }}",
        "{% set s = 'a' * 100000 %}{% set s = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}{{ s }}",
        "{% set s = 'a' * 100000 %}{% set s = s + s + s + s + s + s + s + s + s + s + s %}{{ s }}",
        "{{ ['a' * 100000] * 100 }}",
        "{{ range(10**7)|list }}",
    ],
)
def test_operations_that_would_build_huge_values_are_refused(env, ctx, source: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(RenderLimitError):
            render_bounded(env.from_string(source), ctx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024  # refused before the value was built (it would be gigabytes)


def test_lists_cannot_grow_in_place(env, ctx) -> None:
    with pytest.raises(Exception, match="unsafe"):
        render_bounded(env.from_string("{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}"), ctx)


def test_output_is_cut_off_as_it_grows(env, ctx) -> None:
    template = env.from_string(
        "{% for i in range(100000) %}{% for j in range(100000) %}0123456789{% endfor %}{% endfor %}"
    )
    with pytest.raises(RenderLimitError, match="longer than 100,000 characters"):
        render_bounded(template, ctx, QUICK)


def test_nested_loops_with_empty_bodies_hit_the_deadline(env, ctx) -> None:
    template = env.from_string("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    with pytest.raises(RenderLimitError, match="took too long"):
        render_bounded(template, ctx, QUICK)


def test_loops_over_strings_hit_the_deadline_when_validated(env, ctx) -> None:
    template = env.from_string("{% set s = 'a' * 100000 %}{% for x in s %}{% for y in s %}{% endfor %}{% endfor %}")
    with pytest.raises(RenderLimitError, match="took too long"):
        render_checked(template, ctx, QUICK)


def test_the_hot_path_renderer_is_bounded_too(env, ctx) -> None:
    fast = BoundedTemplate(
        env.from_string("{% for i in range(100000) %}{{ contact.first_name * 10 }}{% endfor %}"), QUICK
    )
    with pytest.raises(RenderLimitError):
        fast.render(fast.parent(ctx))
    ok = BoundedTemplate(env.from_string("{{ '-' * 3 }} {{ contact.first_name }}"), QUICK)
    assert ok.render(ok.parent(ctx)) == "--- Mei"


def test_a_slow_template_fails_the_campaign_load_not_the_daemon(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    campaigns = tmp_path / "campaigns"
    shutil.copytree(REPO / "config" / "campaigns", campaigns)
    body = templates / "mothers-day" / "sms.txt.j2"
    body.write_text(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ unsubscribe_url }}"
    )

    result = load_campaigns(campaigns, templates)

    assert "mothers-day-2027" not in result.campaigns
    assert [p.message for p in result.problems] == [
        "not allowed in the template sandbox: the template took too long to render (time limit exceeded)"
    ]
    assert result.problems[0].path == str(body)
