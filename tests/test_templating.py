"""The template sandbox and the context templates see."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from jinja2 import StrictUndefined, TemplateNotFound, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, unsafe

from topslot.campaign import Campaign
from topslot.errors import InvalidInput
from topslot.rendering import compile_campaign
from topslot.settings import Compliance
from topslot.templating import (
    CONTEXT_NAMES,
    ContactView,
    TemplateOutsideRoot,
    TemplateSandbox,
    contact_view,
    make_environment,
    sample_context,
    sample_context_for,
    template_frame,
    template_function,
)
from topslot.yaml_source import load_yaml

REPO = Path(__file__).resolve().parents[1]
COMPLIANCE = Compliance(postal_address="Example Shop Ltd, 1 Example Road, Shanghai", sender_identity="Example Shop")


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
    assert (
        ctx["track"]("https://shop.example.com/")
        == "https://t.example.com/c/sample?u=https%3A%2F%2Fshop.example.com%2F"
    )


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


SAME_AS_THE_SANDBOX = [
    "{{ 'abc'.startswith('a') }} {{ 'a,b'.split(',') }} {{ 'x'.upper() }} {{ s.strip().title() }}",
    "{{ 'a b'.split(maxsplit=1) }} {{ s.replace('a', 'b', 1) }} {{ '-'.join(['a', 'b']) }}",
    "{{ '{}!'.format(s) }} {{ '{x}'.format_map({'x': 1}) }}",  # wrapped: the sandbox's own formatter
    "{{ '{0.__class__}'.format(s) }}",  # refused by that formatter
    "{{ s.__class__ }}",  # not a public method: the sandbox's own answer
    "{{ 'x'.mro }}",  # no such attribute: undefined
    "{{ s.encode('utf-8') }} {{ s.zfill(5) }} {{ s.center(9, '*') }}",
    "{{ plain('a') }} {{ plain(x='b') }} {{ calls.method('c') }}",
    "{% for i in [1, 2] %}{{ plain(i) }}{{ 'q'.upper() }}{% endfor %}",  # calls in a loop pass _loop_vars
]


class _Calls:
    def method(self, value: str) -> str:
        return f"<{value}>"


def _plain(x: object = "") -> str:
    return f"[{x}]"


@pytest.mark.parametrize("source", SAME_AS_THE_SANDBOX)
def test_the_sandboxs_shortcuts_answer_as_the_sandbox_does(source: str) -> None:
    # TemplateSandbox skips the sandbox's per-call and per-attribute inspection for str methods and for
    # our own marked functions: every answer, refusal included, is still the plain sandbox's
    template_function(_plain)
    template_function(_Calls.method)
    context = {"s": "  ab c ", "plain": _plain, "calls": _Calls()}

    def outcome(env: ImmutableSandboxedEnvironment) -> str:
        try:
            return env.from_string(source).render(context)
        except (SecurityError, UndefinedError) as exc:
            return type(exc).__name__

    expected = outcome(ImmutableSandboxedEnvironment(undefined=StrictUndefined))
    assert outcome(TemplateSandbox(undefined=StrictUndefined)) == expected


def test_marked_functions_are_called_directly_and_unmarked_ones_still_inspected() -> None:
    @unsafe
    def dangerous() -> str:
        return "ran"

    env = TemplateSandbox()
    with pytest.raises(SecurityError):
        env.from_string("{{ f() }}").render(f=dangerous)
    with pytest.raises(SecurityError):  # str methods keep their size checks on the short path
        env.from_string("{{ 'x'.ljust(10**9) }}").render()


def test_contact_view_of_a_row_matches_the_view_built_from_its_fields() -> None:
    from datetime import date
    from types import SimpleNamespace

    fields = dict(
        external_id="e1", first_name="Mei", last_name="Li", email="mei@example.com", phone="+8613800000000",
        gender="female", age=33, country="CN", locale="zh-CN", timezone="Asia/Shanghai", attributes=None,
    )  # fmt: skip
    row = SimpleNamespace(**fields, birth_date=None)
    view, expected = contact_view(row, date(2027, 5, 6)), ContactView(**{**fields, "attributes": {}})
    assert all(getattr(view, f) == getattr(expected, f) for f in ContactView.__slots__ if f != "attributes")
    assert dict(view.attributes) == {} and dict(
        contact_view(
            SimpleNamespace(**{**fields, "attributes": {"t": 1}}, birth_date=date(2000, 5, 7)), date(2027, 5, 6)
        ).attributes
    ) == {"t": 1}  # type: ignore[attr-defined]
    assert contact_view(SimpleNamespace(**fields, birth_date=date(2000, 5, 7)), date(2027, 5, 6)).age == 26  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        view.first_name = "B"  # type: ignore[misc]


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
    # the template writes no opt-out line: topslot adds the one the recipient's country needs when rendering
    assert ctx["coupon"] in sms and "STOP" not in sms and "\n" not in sms


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """templates/ with links: one to a file outside, one to a directory outside, one that stays inside."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("SECRET")
    (outside / "dir" / "also.txt").write_text("SECRET TOO")
    root = tmp_path / "templates"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "real.txt.j2").write_text("inside {{ contact.first_name }}")
    (root / "escape.txt").symlink_to(outside / "secret.txt")  # absolute target
    (root / "sub" / "relative.txt").symlink_to(Path("..", "..", "outside", "secret.txt"))
    (root / "shared").symlink_to(outside / "dir", target_is_directory=True)
    (root / "alias.txt.j2").symlink_to(Path("sub", "real.txt.j2"))  # stays inside
    (root / "subdir").symlink_to(root / "sub", target_is_directory=True)  # stays inside
    (root / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    for name, body in {
        "includes.txt.j2": "{% include 'escape.txt' %}",
        "extends.txt.j2": "{% extends 'sub/relative.txt' %}",
        "imports.txt.j2": "{% import 'shared/also.txt' as m %}x",
        "ignored.txt.j2": "[{% include 'escape.txt' ignore missing %}]",
        "fine.txt.j2": "{% include 'alias.txt.j2' %}/{% include 'subdir/real.txt.j2' %}",
    }.items():
        (root / name).write_text(body)
    return root


def test_templates_linking_outside_the_directory_are_refused(linked: Path, ctx) -> None:
    env = make_environment(linked)
    for name in ("escape.txt", "sub/relative.txt", "shared/also.txt", "dangling.txt"):
        with pytest.raises(TemplateOutsideRoot, match="outside the templates directory"):
            env.get_template(name)
    for name in ("includes.txt.j2", "extends.txt.j2", "imports.txt.j2"):
        with pytest.raises(TemplateOutsideRoot) as raised:
            env.get_template(name).render(ctx)
        assert "SECRET" not in str(raised.value)
    assert env.get_template("ignored.txt.j2").render(ctx) == "[]"  # treated as missing, never read
    with pytest.raises(TemplateNotFound):
        env.get_template("../outside/secret.txt")


def test_links_that_stay_inside_keep_working(linked: Path, tmp_path: Path, ctx) -> None:
    env = make_environment(linked)
    assert env.get_template("alias.txt.j2").render(ctx) == "inside Mei"
    assert env.get_template("fine.txt.j2").render(ctx) == "inside Mei/inside Mei"
    assert env.get_template("alias.txt.j2").filename == str(linked / "alias.txt.j2")  # named as written
    # the templates directory itself may be a link: what counts is where its files really are
    (tmp_path / "current").symlink_to(linked, target_is_directory=True)
    through = make_environment(tmp_path / "current")
    assert through.get_template("sub/real.txt.j2").render(ctx) == "inside Mei"
    with pytest.raises(TemplateNotFound):
        through.get_template("escape.txt")


def test_the_outside_check_runs_before_the_file_is_opened(linked: Path, monkeypatch) -> None:
    import builtins

    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    with pytest.raises(TemplateNotFound):
        make_environment(linked).get_template("escape.txt")
    assert [f for f in opened if f.startswith(str(linked.parent))] == []  # neither the link nor its target


def renderer_tree(tmp_path: Path) -> tuple[Campaign, Path]:
    """The shipped campaign over a copy of templates/, and a file outside it that must never be read."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    (tmp_path / "secret.txt").write_text("SECRET {{ unsubscribe_url }}")
    return Campaign.model_validate(load_yaml(REPO / "config/campaigns/mothers-day-2027.yaml").data), tmp_path


def test_the_renderer_refuses_an_include_linking_outside(tmp_path: Path) -> None:
    campaign, tmp = renderer_tree(tmp_path)
    (tmp / "templates/mothers-day/part.txt").symlink_to(tmp / "secret.txt")
    (tmp / "templates/mothers-day/sms.txt.j2").write_text("{% include 'mothers-day/part.txt' %} Reply STOP")

    with pytest.raises(InvalidInput) as raised:
        compile_campaign(campaign, tmp / "templates", COMPLIANCE)

    assert [p.message for p in raised.value.problems] == [
        "TemplateOutsideRoot: template 'mothers-day/part.txt' leads outside the templates directory"
        " (through a symbolic link)"
    ]


def test_the_renderer_refuses_a_campaign_template_linking_outside(tmp_path: Path) -> None:
    campaign, tmp = renderer_tree(tmp_path)
    (tmp / "templates/mothers-day/sms.txt.j2").unlink()
    (tmp / "templates/mothers-day/sms.txt.j2").symlink_to(tmp / "secret.txt")

    with pytest.raises(InvalidInput):
        compile_campaign(campaign, tmp / "templates", COMPLIANCE)


def test_the_renderer_reports_a_template_it_cannot_read_at_the_file(tmp_path: Path) -> None:
    """Not UTF-8 or over 1 MiB: a located problem (``compile_campaign``: preview, the daemon), never a traceback."""
    campaign, tmp = renderer_tree(tmp_path)
    templates = tmp / "templates"
    (templates / "mothers-day/sms.txt.j2").write_bytes("Reply STOP, café\n".encode("cp1252"))
    (templates / "mothers-day/email.txt.j2").write_bytes(b"x" * (1024 * 1024 + 1))

    with pytest.raises(InvalidInput) as raised:
        compile_campaign(campaign, templates, COMPLIANCE)

    assert [str(p) for p in raised.value.problems] == [
        f"{templates}/mothers-day/email.txt.j2:1:1: the template is larger than 1024 KiB, the limit here; "
        "is it the right file?",
        f"{templates}/mothers-day/sms.txt.j2:1:16: the template is not UTF-8 text; save it as UTF-8",
    ]


def test_the_loader_reads_templates_through_the_bounded_reader(tmp_path: Path) -> None:
    from topslot.templating import TemplateUnreadable

    (tmp_path / "ok.txt").write_text("naïve {{ 1 + 1 }}", encoding="utf-8")
    (tmp_path / "gbk.txt").write_bytes("你好".encode("gbk"))
    env = make_environment(tmp_path)
    assert env.get_template("ok.txt").render() == "naïve 2"
    with pytest.raises(TemplateUnreadable) as raised:
        env.get_template("gbk.txt")
    assert str(raised.value.problem) == f"{tmp_path}/gbk.txt:1:1: the template is not UTF-8 text; save it as UTF-8"
