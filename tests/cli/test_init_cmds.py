"""``topslot init``: a working directory from the packaged examples, never overwriting a file; and
``topslot demo`` where there is no configuration (the packaged examples, in a working copy)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cli_support import REPO, run, topslot

from topslot.examples import example_files

EXPECTED = {
    "config/topslot.yaml",
    "config/campaigns/mothers-day-2027.yaml",
    "config/example/contacts.csv",
    "config/example/events.csv",
    "templates/mothers-day/email.html.j2",
    "templates/mothers-day/email.txt.j2",
    "templates/mothers-day/sms.txt.j2",
    "templates/mothers-day/im.txt.j2",
    "systemd/topslot.service",
    "systemd/topslot.env.example",
}


def test_the_packaged_examples_are_the_repositorys_own_files() -> None:
    found = dict(example_files())
    assert set(found) == EXPECTED
    for relative, packaged in found.items():
        assert packaged.read_bytes() == (REPO / relative).read_bytes(), relative


def test_init_writes_a_working_directory_that_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "shop" / "topslot"

    code, _, err = run("init", str(target))

    assert code == 0, err
    assert {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()} == EXPECTED
    assert f"wrote {target / 'config/topslot.yaml'}" in err.splitlines()
    assert err.splitlines()[-1] == f"10 file(s) written, 0 kept. Next: cd {target} && topslot validate && topslot demo"
    monkeypatch.chdir(target)
    code, out, err = run("validate")
    assert code == 0, out + err
    assert "mothers-day-2027" in out + err


def test_init_never_overwrites_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "topslot.yaml").write_text("log_level: debug  # mine\n", encoding="utf-8")

    code, _, err = run("init")

    assert code == 0, err
    assert (tmp_path / "config" / "topslot.yaml").read_text(encoding="utf-8") == "log_level: debug  # mine\n"
    assert "kept  config/topslot.yaml (it exists)" in err.splitlines()
    assert err.splitlines()[-1] == "9 file(s) written, 1 kept. Next: topslot validate && topslot demo"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = run("init")  # again: everything kept, byte for byte
    assert code == 0 and err.splitlines()[-1] == "0 file(s) written, 10 kept. Next: topslot validate && topslot demo"
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_init_into_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("x", encoding="utf-8")

    code, out, err = run("init", str(file))

    assert (code, out) == (2, "")
    assert err == f"topslot init: {file}: cannot write there: {file} is not a directory\n"
    assert file.read_text(encoding="utf-8") == "x"


@pytest.mark.slow
def test_demo_without_a_config_directory_tours_the_packaged_examples(tmp_path: Path) -> None:
    done = topslot("demo", cwd=tmp_path, timeout=300, COLUMNS="120")

    assert done.returncode == 0, done.stdout + done.stderr
    work = tmp_path / "var" / "demo" / "example"
    assert done.stderr.splitlines()[0] == (
        f"no config/ here: the tour runs on the packaged examples in {work} (`topslot init` writes them where you work)"
    )
    written = {p.relative_to(work) for p in work.rglob("*") if p.is_file()}
    assert {str(p) for p in written if p.parts[0] != "var"} == EXPECTED  # var/: the tour's own database and outbox
    assert "7. outbox" in done.stdout and f"working dir   {work}" in done.stdout
    db = sqlite3.connect(work / "var" / "demo" / "topslot.db")
    states = dict(db.execute("select state, count(*) from deliveries group by state").fetchall())
    db.close()
    assert states.get("sent", 0) > 0, states


NEEDS_CONFIG = [
    "validate", "run", "audience x", "plan x", "preview x 1", "send-test x --to a@example.com", "report x", "status",
    "contacts import f.csv", "contacts forget 1", "events import f.csv", "db upgrade", "coupons import x f.txt",
    "coupons stock x", "deliveries status x", "deliveries retry x", "conversions import f.csv", "campaigns list",
    "campaigns pause x", "suppressions import f.csv", "suppressions export", "bounces import f.eml",
]  # every command but init, demo (the packaged examples) and schema (no configuration)


@pytest.mark.parametrize("args", NEEDS_CONFIG)
def test_commands_that_need_a_configuration_name_topslot_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: str
) -> None:
    monkeypatch.chdir(tmp_path)

    code, _, err = run(*args.split())

    assert code == 2, (args, err)
    assert "`topslot init` writes a working one" in err
