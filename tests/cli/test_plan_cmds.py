"""``topslot plan`` on the shipped example: the summary and the JSON Lines plan agree, and nothing is written."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cli_support import EXAMPLE, run


@pytest.fixture
def imported(config_dir: Path) -> Path:
    assert run("contacts", "import", str(EXAMPLE / "contacts.csv"), "--config", str(config_dir))[0] == 0
    assert run("events", "import", str(EXAMPLE / "events.csv"), "--config", str(config_dir))[0] == 0
    return config_dir


def test_json_plan_gives_each_recipient_their_local_slot(imported: Path) -> None:
    code, out, err = run("plan", "mothers-day-2027", "--config", str(imported), "--from", "2027-05-01T00:00Z", "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records, "the example campaign plans somebody"
    for r in records:
        assert set(r) >= {
            "contact_id",
            "channel",
            "slot",
            "local_time",
            "due_utc",
            "timezone",
            "tz_source",
            "dispatch_start_utc",
        }
        local = datetime.fromisoformat(r["local_time"])
        due = datetime.fromisoformat(r["due_utc"].replace("Z", "+00:00"))
        arrives = local.astimezone(ZoneInfo(r["timezone"])).strftime("%H:%M")
        # an SMS at the 07:30 slot is inside SMS quiet hours: the campaign shifts it to 08:00
        assert local == due and arrives == ("08:00" if (r["channel"], r["slot"]) == ("sms", "07:30") else r["slot"])
        assert r["slot"] in {"07:30", "17:00"} and r["due_utc"].endswith("Z")
        assert r["slot_basis"] == "split"
        assert r["dispatch_start_utc"] <= r["due_utc"]
    # once per recipient and channel
    assert len({(r["contact_id"], r["channel"]) for r in records}) == len(records)


def test_summary_matches_the_json_and_writes_nothing(imported: Path) -> None:
    args = ("plan", "mothers-day-2027", "--config", str(imported), "--from", "2027-05-01T00:00Z")
    code, out, err = run(*args)
    assert code == 0, err
    records = [json.loads(line) for line in run(*args, "--json")[1].splitlines()]
    emails = sum(1 for r in records if r["channel"] == "email")
    sms = sum(1 for r in records if r["channel"] == "sms")
    assert f"planned: email {emails}, sms {sms}" in out
    assert "left out:" in out and "no consent" in out
    assert "Asia/Shanghai (+0800)" in out
    # how each recipient's zone is known, per channel, as the rows say
    by_source: dict[str, Counter[str]] = {"email": Counter(), "sms": Counter()}
    for r in records:
        by_source[r["channel"]][r["tz_source"]] += 1
    order = ["contact", "phone", "country", "campaign", "fallback"]
    shown = "; ".join(
        f"{ch}: " + ", ".join(f"{src} {by_source[ch][src]}" for src in order if by_source[ch][src]) for ch in ("email", "sms")
    )
    assert f"time zone from: {shown}" in out.splitlines()
    assert "no known time zone" not in out  # the example's contacts all have one
    # a dry run: a second run sees the same, and the ledger is empty
    import sqlite3

    db = imported.parent / "var" / "topslot.db"
    assert sqlite3.connect(db).execute("select count(*) from deliveries").fetchone()[0] == 0


def test_days_limits_the_window_and_bad_from_is_a_clear_error(imported: Path) -> None:
    code, out, _ = run(
        "plan", "mothers-day-2027", "--config", str(imported), "--from", "2027-04-01T00:00Z", "--days", "1"
    )
    assert code == 0 and "nothing to send in this window" in out
    code, _, err = run("plan", "mothers-day-2027", "--config", str(imported), "--from", "yesterday")
    assert code == 2 and "--from: 'yesterday' is not an ISO 8601" in err
    code, _, err = run("plan", "no-such-campaign", "--config", str(imported))
    assert code == 2 and "not found" in err


def test_plan_shows_cost_per_channel_and_estimated_sms_segments(imported: Path) -> None:
    """SMS segments are estimated by rendering the planned recipients (every one of them here: fewer
    than 100 per country): Chinese recipients get a two-segment UCS-2 SMS, the others one GSM-7 segment."""
    args = ("plan", "mothers-day-2027", "--config", str(imported), "--from", "2027-05-01T00:00Z")
    code, out, err = run(*args)
    assert code == 0, err
    assert "segments not estimated" not in err  # compliance settings are missing here: email-only, not needed
    records = [json.loads(line) for line in run(*args, "--json")[1].splitlines()]
    sms = [r for r in records if r["channel"] == "sms"]
    emails = [r for r in records if r["channel"] == "email"]
    assert sms and emails

    import sqlite3

    db = sqlite3.connect(imported.parent / "var" / "topslot.db")
    country = dict(db.execute("select id, country from contacts").fetchall())
    for r in sms:
        expected = 2.0 if country[r["contact_id"]] == "CN" else 1.0
        assert (r["est_segments"], r["est_cost"]) == (expected, round(expected * 0.0079, 6)), r
    assert all(r["cost"] == 0.0004 and "est_segments" not in r for r in emails)

    segments = int(sum(r["est_segments"] for r in sms))
    assert segments > len(sms)  # the example plans Chinese SMS recipients
    lines = out.splitlines()
    planned = lines.index(next(line for line in lines if line.startswith("planned: ")))
    email_cost = f"{Decimal('0.0004') * len(emails):.2f}"
    sms_cost = f"{Decimal('0.0079') * segments:.2f}"
    assert lines[planned + 1] == f"cost email: {len(emails)} message(s) × 0.0004 USD = {email_cost} USD"
    sms_line = lines[planned + 2]
    assert sms_line.startswith(
        f"cost sms: {len(sms)} message(s), ~{segments} segment(s) (estimated from {len(sms)} rendered;"
    )
    assert "CN 2.00" in sms_line and "GB 1.00" in sms_line and sms_line.endswith(f"× 0.0079 USD = ~{sms_cost} USD")


def test_plan_warns_of_recipients_without_a_known_time_zone(imported: Path) -> None:
    lost, bought = imported.parent / "lost.csv", imported.parent / "bought.csv"
    lost.write_text(  # in the segment (women of 30 to 50 who bought cosmetics), but no zone, phone or country
        "external_id,email,first_name,gender,age,consent_email\n"
        "nowhere-1,nowhere1@example.org,Ana,female,40,yes\nnowhere-2,nowhere2@example.org,Bo,female,35,yes\n",
        encoding="utf-8",
    )
    bought.write_text(
        "type,contact,order_id,sku,category,amount,currency,time,term\n"
        "purchase,nowhere-1,N1,LIP-102,cosmetics,20.00,USD,2027-03-01T10:00:00Z,\n"
        "purchase,nowhere-2,N2,LIP-102,cosmetics,20.00,USD,2027-03-01T10:00:00Z,\n",
        encoding="utf-8",
    )
    assert run("contacts", "import", str(lost), "--config", str(imported))[0] == 0
    assert run("events", "import", str(bought), "--config", str(imported))[0] == 0
    code, out, err = run("plan", "mothers-day-2027", "--config", str(imported), "--from", "2027-05-01T00:00Z")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("time zone from: "))
    assert "fallback 2" in line.partition("; sms:")[0], line
    assert (
        "warning: 2 email recipient(s) have no known time zone and are planned in the fallback zone Asia/Shanghai: "
        "import their timezone, a phone number, or a country with one zone"
    ) in out.replace("\n", " ")


def test_plan_shows_the_frequency_cap_in_force_and_what_it_left_out(imported: Path) -> None:
    campaign_file = imported / "campaigns" / "mothers-day-2027.yaml"
    text = campaign_file.read_text(encoding="utf-8")
    assert "per_recipient: once" in text
    campaign_file.write_text(text.replace("per_recipient: once", "per_recipient: every_slot"), encoding="utf-8")
    with (imported / "topslot.yaml").open("a", encoding="utf-8") as f:
        f.write("frequency_caps: {email: {max: 1, per: 7d}}\n")  # every_slot at its split slot: 2 workdays
    args = ("plan", "mothers-day-2027", "--config", str(imported), "--from", "2027-05-01T00:00Z")
    code, out, err = run(*args)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("frequency caps: "))
    left_out = int(line.removeprefix("frequency caps: email 1 per 7d (").split(" ")[0].replace(",", ""))
    assert left_out > 0 and f"frequency cap {left_out:,}" in out
    records = [json.loads(x) for x in run(*args, "--json")[1].splitlines()]
    per_contact = Counter(r["contact_id"] for r in records if r["channel"] == "email")
    assert per_contact and max(per_contact.values()) == 1  # every_slot, but one email per 7 days at most
    assert not any(r.get("skip_reason") == "frequency_cap" for r in records)  # only planned rows are listed
