"""The data commands end to end on the shipped example files (SQLite in tmp_path)."""

from __future__ import annotations

from pathlib import Path

from cli_support import EXAMPLE, run


def test_import_example_then_audience(config_dir: Path) -> None:
    code, out, _ = run("contacts", "import", str(EXAMPLE / "contacts.csv"), "--config", str(config_dir))
    assert code == 0 and "300" in out
    code, out, _ = run("events", "import", str(EXAMPLE / "events.csv"), "--config", str(config_dir))
    assert code == 0
    code, out, err = run("audience", "mothers-day-2027", "--config", str(config_dir), "--at", "2027-05-06T00:00:00Z")
    assert code == 0, err
    assert "contacts in the segment" in out and "email" in out and "sms" in out and "no consent" in out
    code, out, _ = run("db", "upgrade", "--config", str(config_dir))
    assert code == 0 and "up to date" in out


def test_bad_rows_are_listed_and_exit_1_but_good_rows_kept(config_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("external_id,email\nok1,ok@example.com\nbad,not-an-email\n,x@example.com\n", encoding="utf-8")
    code, out, err = run("contacts", "import", str(path), "--config", str(config_dir))
    assert code == 1
    assert err.splitlines() == [
        f"{path}:3:2: email 'not-an-email' is not valid: An email address must have an @-sign.",
        f"{path}:4:1: external_id is required",
    ]
    code, out, err = run("contacts", "import", str(path), "--config", str(config_dir))
    assert code == 1 and "1" in out  # ok1 is now an update


def test_unknown_campaign_and_missing_file(config_dir: Path, tmp_path: Path) -> None:
    code, _, err = run("audience", "nope", "--config", str(config_dir))
    assert code == 2 and "campaign 'nope' not found" in err
    code, _, err = run("events", "import", str(tmp_path / "missing.csv"), "--config", str(config_dir))
    assert code == 2 and "no such file" in err
