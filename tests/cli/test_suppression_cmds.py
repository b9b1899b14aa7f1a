"""``topslot suppressions import | add | remove | export`` and ``topslot contacts forget`` end to end
(SQLite in tmp_path): planning skips what they suppress, reports keep their totals."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest
from cli_support import EXAMPLE, REPO, db_rows, run
from sqlalchemy import text

sys.path.insert(0, str(REPO / "tests"))
from reporting.seed import seed  # noqa: E402

from topslot.settings import load_settings  # noqa: E402
from topslot.store.db import open_engine, upgrade  # noqa: E402


def query(config_dir: Path, sql: str) -> list[tuple]:
    return [tuple(r) for r in db_rows(config_dir.parent / "var" / "topslot.db", text(sql))]


def planned_emails(config_dir: Path) -> set[str]:
    code, out, err = run(
        "plan", "mothers-day-2027", "--config", str(config_dir), "--from", "2027-05-01T00:00Z", "--json"
    )
    assert code == 0, err
    ids = {json.loads(line)["contact_id"] for line in out.splitlines() if json.loads(line)["channel"] == "email"}
    emails = dict(query(config_dir, "SELECT id, lower(email) FROM contacts"))
    return {emails[i] for i in ids if emails.get(i)}


@pytest.fixture
def imported(config_dir: Path) -> Path:
    assert run("contacts", "import", str(EXAMPLE / "contacts.csv"), "--config", str(config_dir))[0] == 0
    assert run("events", "import", str(EXAMPLE / "events.csv"), "--config", str(config_dir))[0] == 0
    return config_dir


def test_import_a_mailchimp_export_with_bad_lines_then_plan_skips_them(imported: Path, tmp_path: Path) -> None:
    before = planned_emails(imported)
    assert len(before) >= 3
    chosen = sorted(before)[:2]
    path = tmp_path / "unsubscribed.csv"
    path.write_text(
        f"Email Address,First Name,Last Name\n{chosen[0].upper()},A,A\nnot-an-email,B,B\n{chosen[1]},C,C\n",
        encoding="utf-8",
    )
    code, out, err = run("suppressions", "import", str(path), "--config", str(imported))
    assert code == 1
    assert (
        err.splitlines()[0] == f"{path}:3:1: email 'not-an-email' is not valid: An email address must have an @-sign."
    )
    assert re.search(r"│\s+2 │\s+0 │\s+1 │", out), out
    code, out, _ = run("suppressions", "import", str(path), "--config", str(imported))
    assert code == 1 and re.search(r"│\s+0 │\s+2 │\s+1 │", out), out  # idempotent
    after = planned_emails(imported)
    assert after == before - set(chosen)
    reasons = query(imported, "SELECT reason, source FROM suppressions")
    assert reasons == [("manual", "import:unsubscribed.csv")] * 2


def test_plain_list_with_channel_and_reason(config_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "stops.txt"
    path.write_text("(212) 555-0123\n+44 20 7946 0958\n", encoding="utf-8")
    code, out, err = run(
        "suppressions", "import", str(path), "--channel", "sms", "--reason", "sms_stop", "--config", str(config_dir)
    )
    assert code == 0, err
    assert sorted(query(config_dir, "SELECT channel, address, reason FROM suppressions")) == [
        ("sms", "+12125550123", "sms_stop"),
        ("sms", "+442079460958", "sms_stop"),
    ]
    code, _, err = run("suppressions", "import", str(path), "--reason", "because", "--config", str(config_dir))
    assert code == 2 and "because" in err


def test_add_remove_export_round_trip(config_dir: Path, tmp_path: Path) -> None:
    cfg = ("--config", str(config_dir))
    assert run("suppressions", "add", "A@Example.com", "--channel", "email", *cfg)[0] == 0
    assert run("suppressions", "add", "212 555 0123", "--channel", "sms", "--reason", "sms_stop", *cfg)[0] == 0
    assert run("suppressions", "add", "telegram:42", "--channel", "im", *cfg)[0] == 0
    code, _, err = run("suppressions", "add", "nope", "--channel", "email", *cfg)
    assert code == 2 and "not valid" in err
    code, out, _ = run("suppressions", "export", *cfg)
    exported = list(csv.DictReader(io.StringIO(out)))
    assert [(r["channel"], r["address"], r["reason"]) for r in exported] == [
        ("email", "a@example.com", "manual"),
        ("im", "telegram:42", "manual"),
        ("sms", "+12125550123", "sms_stop"),
    ]
    code, out, _ = run("suppressions", "export", "--channel", "sms", "--format", "jsonl", *cfg)
    assert code == 0 and [json.loads(line)["address"] for line in out.splitlines()] == ["+12125550123"]

    # an sms_stop is the recipient's own request: removing it needs --force
    code, _, err = run("suppressions", "remove", "+12125550123", "--channel", "sms", *cfg)
    assert code == 1 and "--force" in err
    code, _, err = run("suppressions", "remove", "+12125550123", "--channel", "sms", "--force", *cfg)
    assert code == 0 and '"suppression_removed"' in err and "+12125550123" not in err  # logged, address hashed
    code, _, err = run("suppressions", "remove", "a@example.com", "--channel", "email", *cfg)
    assert code == 0
    code, _, err = run("suppressions", "remove", "a@example.com", "--channel", "email", *cfg)
    assert code == 1 and "not suppressed" in err

    # the export reads back in: a second database gets the same rows
    dump = tmp_path / "dump.csv"
    run("suppressions", "add", "b@example.com", "--channel", "email", "--reason", "unsubscribe", *cfg)
    code, _, err = run("suppressions", "export", "-o", str(dump), *cfg)
    assert code == 0 and "2 suppressions written" in err
    rows_before = sorted(query(config_dir, "SELECT channel, address, reason FROM suppressions"))
    with sqlite3.connect(config_dir.parent / "var" / "topslot.db") as db:
        db.execute("DELETE FROM suppressions")
    code, out, err = run("suppressions", "import", str(dump), *cfg)
    assert code == 0, err
    assert sorted(query(config_dir, "SELECT channel, address, reason FROM suppressions")) == rows_before


def test_choices_are_listed_in_help() -> None:
    code, out, _ = run("suppressions", "export", "--help")
    assert code == 0 and "email" in out and "jsonl" in out
    code, _, err = run("suppressions", "export", "--channel", "fax")
    assert code == 2 and "fax" in err


def test_forget_then_reimport_is_never_mailed_again(imported: Path) -> None:
    cfg = ("--config", str(imported))
    target = sorted(planned_emails(imported))[0]
    [(cid, ext)] = query(imported, f"SELECT id, external_id FROM contacts WHERE lower(email) = '{target}'")
    code, _, _ = run("contacts", "forget", "no-such-contact", "--yes", *cfg)
    assert code == 1
    code, out, err = run("contacts", "forget", ext, "--yes", *cfg)
    assert code == 0, err
    assert "forgotten" in out and '"contact_forgotten"' in err
    [row] = query(imported, f"SELECT external_id, email, phone, first_name, attributes FROM contacts WHERE id = {cid}")
    assert row[0].startswith("forgotten-") and row[1:] == (None, None, None, None)
    assert query(imported, f"SELECT count(*) FROM contact_tags WHERE contact_id = {cid}") == [(0,)]
    assert query(imported, f"SELECT count(*) FROM searches WHERE contact_id = {cid}") == [(0,)]
    assert ("email", target, "forgotten") in query(imported, "SELECT channel, address, reason FROM suppressions")
    # the shop sends the same person again: a new contact, never mailed
    assert run("contacts", "import", str(EXAMPLE / "contacts.csv"), *cfg)[0] == 0
    [(new_id,)] = query(imported, f"SELECT id FROM contacts WHERE external_id = '{ext}'")
    assert new_id != cid
    assert target not in planned_emails(imported)


def test_forget_asks_first(imported: Path) -> None:
    [(ext,)] = query(imported, "SELECT external_id FROM contacts ORDER BY id LIMIT 1")
    code, _, _ = run("contacts", "forget", ext, "--config", str(imported))  # no input: not confirmed
    assert code == 1
    assert query(imported, f"SELECT count(*) FROM contacts WHERE external_id = '{ext}'") == [(1,)]


@pytest.fixture
def seeded(config_dir: Path) -> Path:
    source = (config_dir / "campaigns" / "mothers-day-2027.yaml").read_text(encoding="utf-8")
    (config_dir / "campaigns" / "spring.yaml").write_text(re.sub(r"(?m)^id: .*$", "id: spring", source), "utf-8")

    async def work() -> None:
        engine = open_engine(load_settings(config_dir).database_url)
        try:
            await upgrade(engine)
            await seed(engine)
        finally:
            await engine.dispose()

    asyncio.run(work())
    return config_dir


def test_forget_keeps_the_report_totals(seeded: Path) -> None:
    cfg = ("--config", str(seeded))
    code, before, err = run("report", "spring", "--format", "json", *cfg)
    assert code == 0, err
    for who in ("c1", "c3", "c5"):
        assert run("contacts", "forget", who, "--yes", *cfg)[0] == 0
    code, after, err = run("report", "spring", "--format", "json", *cfg)
    assert code == 0, err
    assert json.loads(after)["total"] == json.loads(before)["total"]
    assert json.loads(after)["groups"] == json.loads(before)["groups"]


def test_hostile_lines_cost_only_themselves(config_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(
        b"email\nok1@example.com\n" + b"caf\xe9@example.com\n" + b"x" * (1024 * 1024 + 10) + b"\nok2@example.com\n"
    )
    code, out, err = run("suppressions", "import", str(path), "--config", str(config_dir))
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith(f"{path}:3:1: the line is not valid UTF-8")
    assert lines[1] == f"{path}:4:1: the line is longer than 1,048,576 characters"
    assert sorted(query(config_dir, "SELECT address FROM suppressions")) == [("ok1@example.com",), ("ok2@example.com",)]
