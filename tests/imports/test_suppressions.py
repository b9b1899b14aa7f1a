"""Suppression files (pure): other tools' unsubscribe exports, plain lists, JSON Lines, bad lines."""

from __future__ import annotations

from pathlib import Path

from topslot.errors import Problem
from topslot.imports.suppressions import SuppressionRow, normalise_address, suppression_rows


def rows(path: Path, **kw: object) -> list[SuppressionRow | list[Problem]]:
    args: dict[str, object] = {"channel": None, "reason": "manual", "source": "test", "default_country": "US"}
    args.update(kw)
    return list(suppression_rows(path, **args))  # type: ignore[arg-type]


def test_mailchimp_export_with_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "unsubscribed_members.csv"
    path.write_text(
        "Email Address,First Name,Last Name,UNSUB_TIME\n"
        "Ann@Example.COM,Ann,A,2026-01-01\n"
        "not-an-email,Bob,B,2026-01-02\n"
        ",Nobody,N,2026-01-03\n"
        "zoe@example.com,Zoë,Z,2026-01-04\n",
        encoding="utf-8",
    )
    got = rows(path)
    assert got[0] == SuppressionRow(2, "email", "ann@example.com", "manual", "test")
    assert got[1] == [
        Problem(str(path), 3, 1, "email 'not-an-email' is not valid: An email address must have an @-sign.")
    ]
    assert got[2] == [Problem(str(path), 4, 1, "email_address is required")]
    assert got[3] == SuppressionRow(5, "email", "zoe@example.com", "manual", "test")


def test_plain_list_without_header_and_phones(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("a@example.com\n\n(212) 555-0123\n+44 20 7946 0958\ntelegram:12345\nnonsense\n", encoding="utf-8")
    got = rows(path)
    assert got[:4] == [
        SuppressionRow(1, "email", "a@example.com", "manual", "test"),
        SuppressionRow(3, "sms", "+12125550123", "manual", "test"),
        SuppressionRow(4, "sms", "+442079460958", "manual", "test"),
        SuppressionRow(5, "im", "telegram:12345", "manual", "test"),
    ]
    assert got[4] == [Problem(str(path), 6, 1, "phone 'nonsense' is not a phone number")]


def test_channel_option_and_listmonk_style_columns(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.csv"
    path.write_text('uuid,email,name,attributes,status\nu1,x@example.com,X,"{}",blocklisted\n', encoding="utf-8")
    assert rows(path, channel="email") == [SuppressionRow(2, "email", "x@example.com", "manual", "test")]


def test_topslot_export_columns_and_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(
        "channel,address,reason,source,created_at\n"
        "sms,+12125550123,sms_stop,twilio,2026-01-01T00:00:00+00:00\n"
        "fax,123,manual,,\n"
        "email,a@example.com,because,,\n",
        encoding="utf-8",
    )
    got = rows(path)
    assert got[0] == SuppressionRow(2, "sms", "+12125550123", "sms_stop", "twilio")
    assert got[1] == [Problem(str(path), 3, 1, "channel 'fax' is not one of email, sms, im")]
    assert isinstance(got[2], list) and got[2][0].column == 3 and "reason 'because'" in got[2][0].message
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"email": "B@example.com"}\n{"phone": 5}\n[1]\n', encoding="utf-8")
    got = rows(jsonl)
    assert got[0] == SuppressionRow(1, "email", "b@example.com", "manual", "test")
    assert isinstance(got[1], list) and got[1][0].line == 2
    assert got[2] == [Problem(str(jsonl), 3, 1, "each line must be a JSON object")]


def test_normalise_address() -> None:
    assert normalise_address("email", " A@Example.com ", None) == "a@example.com"
    assert normalise_address("sms", "212-555-0123", "US") == "+12125550123"
    assert normalise_address("im", "whatsapp:+12125550123", None) == "whatsapp:+12125550123"
