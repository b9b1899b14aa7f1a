"""Symbolic links in templates/: followed only while their real path stays inside the directory.

Checked where a user meets them: ``load_campaign_file`` (what the daemon and every command load),
``topslot validate`` and ``topslot preview``. The loader itself is tested in tests/test_templating.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from topslot.cli import app
from topslot.config.campaigns import load_campaign_file
from topslot.errors import Problem

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "campaigns" / "mothers-day-2027.yaml"
SECRET = "TOP-SECRET-CONTENT"
OUTSIDE = "is a symbolic link (or is under one) to a file outside the templates directory"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/templates (a copy of the shipped one), tmp/outside/ with a file a template must never show,
    tmp/config/campaigns/ with the shipped campaign."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt.j2").write_text(f"{SECRET} {{{{ unsubscribe_url }}}}")
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    shutil.copy(EXAMPLE, tmp_path / "config" / "campaigns" / "mothers-day-2027.yaml")
    return tmp_path


def key_position(value: str) -> tuple[int, int]:
    """(line, column) of ``value`` in the shipped campaign file: where its problem must point."""
    for number, line in enumerate(EXAMPLE.read_text(encoding="utf-8").splitlines(), start=1):
        if value in line and not line.lstrip().startswith("#"):
            return number, line.index(value) + 1
    raise AssertionError(value)


def load(tree: Path) -> list[Problem]:
    campaign, problems = load_campaign_file(tree / "config" / "campaigns" / "mothers-day-2027.yaml", tree / "templates")
    assert (campaign is None) == bool(problems)
    return problems


def link(at: Path, target: Path) -> None:
    at.unlink()
    at.symlink_to(target)


def test_a_campaign_template_linking_outside_is_a_located_problem(tree: Path) -> None:
    link(tree / "templates/mothers-day/sms.txt.j2", tree / "outside/secret.txt.j2")

    problems = load(tree)

    line, column = key_position("mothers-day/sms.txt.j2")
    assert [(p.line, p.column) for p in problems] == [(line, column)]
    assert problems[0].message.startswith(f"content.sms.body: 'mothers-day/sms.txt.j2' {OUTSIDE}")
    assert SECRET not in problems[0].message


def test_relative_links_and_linked_directories_are_checked_too(tree: Path) -> None:
    link(tree / "templates/mothers-day/sms.txt.j2", Path("..", "..", "outside", "secret.txt.j2"))
    shutil.move(tree / "templates/mothers-day/email.txt.j2", tree / "outside/email.txt.j2")
    (tree / "templates/mothers-day/mail").symlink_to(tree / "outside", target_is_directory=True)
    text = EXAMPLE.read_text().replace("text: mothers-day/email.txt.j2", "text: mothers-day/mail/email.txt.j2")
    (tree / "config/campaigns/mothers-day-2027.yaml").write_text(text)

    messages = sorted(p.message for p in load(tree))

    assert messages == [
        f"content.email.text: 'mothers-day/mail/email.txt.j2' {OUTSIDE}; copy the file into the templates directory"
        " instead",
        f"content.sms.body: 'mothers-day/sms.txt.j2' {OUTSIDE}; copy the file into the templates directory instead",
    ]


@pytest.mark.parametrize("tag", ["include", "extends", "import"])
def test_include_extends_or_import_of_a_link_outside_is_located_in_the_template(tree: Path, tag: str) -> None:
    (tree / "templates/mothers-day/footer.txt.j2").symlink_to(tree / "outside/secret.txt.j2")
    sms = tree / "templates/mothers-day/sms.txt.j2"
    statement = {"include": "{% include 'mothers-day/footer.txt.j2' %}",
                 "extends": "{% extends 'mothers-day/footer.txt.j2' %}",
                 "import": "{% import 'mothers-day/footer.txt.j2' as footer %}"}[tag]  # fmt: skip
    sms.write_text("Hi {{ contact.first_name }}\n" + statement + "\n{{ unsubscribe_url }} Reply STOP to opt out")

    problems = load(tree)

    assert [(p.path, p.line) for p in problems] == [(str(sms), 2)]
    assert problems[0].message == f"included template 'mothers-day/footer.txt.j2' {OUTSIDE}; copy the file into" + (
        " the templates directory instead"
    )


def test_links_that_stay_inside_keep_working(tree: Path) -> None:
    shared = tree / "templates/shared"
    shared.mkdir()
    shutil.move(tree / "templates/mothers-day/sms.txt.j2", shared / "sms.txt.j2")
    (tree / "templates/mothers-day/sms.txt.j2").symlink_to(Path("..", "shared", "sms.txt.j2"))
    shutil.move(tree / "templates/mothers-day/email.txt.j2", shared / "email.txt.j2")
    (tree / "templates/mothers-day/parts").symlink_to(shared, target_is_directory=True)
    text = EXAMPLE.read_text().replace("text: mothers-day/email.txt.j2", "text: mothers-day/parts/email.txt.j2")
    (tree / "config/campaigns/mothers-day-2027.yaml").write_text(text)

    assert load(tree) == []
    linked_root = tree / "current-templates"  # the templates directory may itself be a link
    linked_root.symlink_to(tree / "templates", target_is_directory=True)
    assert load_campaign_file(tree / "config/campaigns/mothers-day-2027.yaml", linked_root)[1] == []


# ---------------------------------------------------------------- the commands


def write_settings(tree: Path) -> Path:
    config = tree / "config"
    (config / "topslot.yaml").write_text(
        f"database_url: sqlite+aiosqlite:///{tree / 'var' / 'topslot.db'}\n"
        f"templates_dir: {tree / 'templates'}\n"
        "tracking_base_url: https://t.shop.example.com\n"
        "compliance: {postal_address: 'Example Shop, 1 Example Road, Shanghai', sender_identity: Example Shop}\n",
        encoding="utf-8",
    )
    return config


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_validate_and_preview_refuse_a_template_linking_outside(tree: Path) -> None:
    config = write_settings(tree)
    link(tree / "templates/mothers-day/sms.txt.j2", tree / "outside/secret.txt.j2")
    line, column = key_position("mothers-day/sms.txt.j2")
    where = f"{config / 'campaigns' / 'mothers-day-2027.yaml'}:{line}:{column}: "

    code, out, err = run("validate", str(config), "--templates", str(tree / "templates"))

    assert code == 1 and SECRET not in out + err
    assert out.splitlines() == [where + f"content.sms.body: 'mothers-day/sms.txt.j2' {OUTSIDE}; copy the file into"
                                " the templates directory instead"]  # fmt: skip

    for channel in ("sms", "email"):  # the whole campaign is refused, whichever channel is asked for
        code, out, err = run("preview", "mothers-day-2027", "C000001", "--channel", channel, "--config", str(config))
        assert code == 2 and SECRET not in out + err
        assert where + "content.sms.body" in out + err and "campaign 'mothers-day-2027' not found or invalid" in err


def test_validate_accepts_links_that_stay_inside(tree: Path) -> None:
    config = write_settings(tree)
    shutil.move(tree / "templates/mothers-day/sms.txt.j2", tree / "templates/sms-shared.txt.j2")
    (tree / "templates/mothers-day/sms.txt.j2").symlink_to(Path("..", "sms-shared.txt.j2"))

    code, out, err = run("validate", str(config), "--templates", str(tree / "templates"))

    assert code == 0, out + err
