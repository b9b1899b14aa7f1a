"""The template sandbox and the context templates see."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import UndefinedError
from jinja2.exceptions import SecurityError

from daemon.campaign import Campaign
from daemon.config.yaml_source import load_yaml
from daemon.templating import (
    CONTEXT_NAMES,
    ContactView,
    make_environment,
    sample_context,
    sample_context_for,
    template_frame,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path: Path):
    (tmp_path / "page.html.j2").write_text("<p>{{ contact.first_name }} {{ text }}</p>")
    (tmp_path / "page.txt.j2").write_text("{{ text }}")
    (tmp_path / "nested.txt.j2").write_text("line one\n{% include 'bad.txt.j2' %}\n")
    (tmp_path / "bad.txt.j2").write_text("ok\n\n{{ contact.nickname }}\n")
    return make_environment(tmp_path)


@pytest.fixture
def ctx():
    return sample_context_for("c1", "Campaign", "https://shop.example.com/x?a=1")


def test_context_has_exactly_the_documented_names(ctx) -> None:
    assert tuple(ctx) == CONTEXT_NAMES
    assert ctx["slot"] == "07:30"
    assert ctx["track"]("https://shop.example.com/") == "https://t.example.com/c/sample?u=https%3A%2F%2Fshop.example.com%2F"


def test_sample_context_from_a_campaign_uses_its_landing_url() -> None:
    campaign = Campaign.model_validate(load_yaml(REPO / "config/campaigns/mothers-day-2027.yaml").data)

    ctx = sample_context(campaign, "email")

    assert ctx["campaign"].id == "mothers-day-2027"
    assert "utm_medium=email" in ctx["landing_url"]


def test_html_is_autoescaped_and_text_is_not(env, ctx) -> None:
    ctx = {**ctx, "text": "<b>&</b>"}

    assert env.get_template("page.html.j2").render(ctx) == "<p>Mei &lt;b&gt;&amp;&lt;/b&gt;</p>"
    assert env.get_template("page.txt.j2").render(ctx) == "<b>&</b>"
    assert env.from_string("{{ text }}").render(ctx) == "<b>&</b>"


def test_undefined_attribute_names_the_variable(env, ctx) -> None:
    with pytest.raises(UndefinedError, match=r"^'contact' has no attribute 'nickname' \(it has: external_id"):
        env.from_string("{{ contact.nickname }}").render(ctx)
    with pytest.raises(UndefinedError, match="'unknown' is undefined"):
        env.from_string("{{ unknown }}").render(ctx)


def test_missing_attribute_suggests_default_and_default_works(env, ctx) -> None:
    with pytest.raises(UndefinedError, match=r"contact.attributes.tier \| default"):
        env.from_string("{{ contact.attributes.tier }}").render(ctx)
    assert env.from_string("{{ contact.attributes.tier | default('std') }}").render(ctx) == "std"
    contact = ContactView(first_name="A", attributes={"tier": "gold"})
    assert env.from_string("{{ c.attributes.tier }}/{{ c.attributes['tier'] }}").render(c=contact) == "gold/gold"


def test_error_in_an_included_template_is_located_in_that_file(env, ctx) -> None:
    with pytest.raises(UndefinedError) as raised:
        env.get_template("nested.txt.j2").render(ctx)

    filename, line = template_frame(raised.value.__traceback__)
    assert filename.endswith("bad.txt.j2") and line == 3


def test_sandbox_blocks_class_walks(env, ctx) -> None:
    with pytest.raises(SecurityError):
        env.from_string("{{ contact.__class__.__mro__ }}").render(ctx)
    with pytest.raises(SecurityError):
        env.from_string("{{ track.__globals__ }}").render(ctx)


def test_sandbox_blocks_memory_bombs(env, ctx) -> None:
    with pytest.raises(SecurityError):
        env.from_string("{{ 'a' * 10**9 }}").render(ctx)
    with pytest.raises(SecurityError):
        env.from_string("{{ [1] * 1000000 }}").render(ctx)
    with pytest.raises(SecurityError):
        env.from_string("{{ 10 ** 100000 }}").render(ctx)
    assert env.from_string("{{ '-' * 3 }}{{ 2 ** 3 }}").render(ctx) == "---8"


def test_contact_view_is_read_only_and_whitelisted() -> None:
    contact = ContactView(first_name="A", email="a@example.com")

    with pytest.raises(AttributeError):
        contact.first_name = "B"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ContactView(password="x")
    assert contact.phone is None  # type: ignore[attr-defined]


def test_track_refuses_non_urls(ctx) -> None:
    with pytest.raises(ValueError):
        ctx["track"]("javascript:alert(1)")


def test_shipped_templates_render(ctx) -> None:
    env = make_environment(REPO / "templates")

    html = env.get_template("mothers-day/email.html.j2").render(ctx)
    text = env.get_template("mothers-day/email.txt.j2").render(ctx)
    sms = env.get_template("mothers-day/sms.txt.j2").render(ctx)

    for body in (html, text):
        assert ctx["unsubscribe_url"] in body and ctx["coupon"] in body and "Mei" in body
    assert "100 Market Street" in html
    assert sms.endswith("Reply STOP to opt out") and "\n" not in sms
