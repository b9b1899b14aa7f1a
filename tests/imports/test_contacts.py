from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from topslot.errors import Problem
from topslot.imports.contacts import ContactRow, parse_contact
from topslot.imports.reader import Record

NOW = datetime(2027, 5, 6, 12, tzinfo=UTC)


def parse(fields: dict[str, Any], typed: bool = False, default_country: str | None = "US") -> ContactRow | list[Problem]:
    columns = {name: i + 1 for i, name in enumerate(fields)}
    return parse_contact(Record(7, fields, columns, typed=typed), "c.csv", default_country=default_country, now=NOW)


def test_a_full_row_is_normalised() -> None:
    row = parse(
        {
            "external_id": " 42 ", "email": "Ann.Lee@EXAMPLE.com", "phone": "(202) 555-0101", "first_name": "Ann",
            "gender": "F", "birth_date": "1990-05-06", "country": "us", "timezone": "America/New_York",
            "locale": "en_US", "tags": "VIP; newsletter|vip", "consent_email": "Granted", "consent_sms": "0",
            "consent_im": "", "consent_source": "form", "consent_at": "2026-01-02T03:04:05+08:00",
            "im_wechat": "wx1", "im_telegram": "", "loyalty": "5", "score": "4.5", "zip": "0123", "blank": "",
        }
    )  # fmt: skip
    assert isinstance(row, ContactRow)
    assert row.external_id == "42" and row.line == 7
    assert row.values == {
        "email": "Ann.Lee@example.com", "phone": "+12025550101", "first_name": "Ann", "gender": "female",
        "birth_date": date(1990, 5, 6), "country": "US", "timezone": "America/New_York", "locale": "en-US",
        "im_ids": {"wechat": "wx1"}, "attributes": {"loyalty": 5, "score": 4.5, "zip": "0123"},
    }  # fmt: skip
    assert row.tags == ("vip", "newsletter")
    at = datetime(2026, 1, 1, 19, 4, 5, tzinfo=UTC)
    assert [(c.channel, c.granted, c.source, c.recorded_at) for c in row.consents] == [
        ("email", True, "form", at),
        ("sms", False, "form", at),
    ]


def test_phone_is_read_in_the_rows_country_then_the_default() -> None:
    cn = parse({"external_id": "1", "phone": "138 0013 8000", "country": "CN"})
    us = parse({"external_id": "2", "phone": "202 555 0101"})
    assert isinstance(cn, ContactRow) and cn.values["phone"] == "+8613800138000"
    assert isinstance(us, ContactRow) and us.values["phone"] == "+12025550101"


def test_every_problem_of_a_row_is_reported_with_its_column() -> None:
    problems = parse(
        {
            "external_id": "", "email": "not-an-email", "phone": "12", "gender": "robot", "birth_date": "1990-13-01",
            "age": "abc", "country": "XX", "timezone": "Mars/Base", "locale": "!!", "consent_email": "maybe",
            "consent_at": "yesterday",
        }
    )  # fmt: skip
    assert isinstance(problems, list)
    # external_id, country (read first: the phone depends on it), then the columns in order
    assert [p.column for p in problems] == [1, 7, 2, 3, 4, 5, 6, 8, 9, 11, 10]
    text = "\n".join(str(p) for p in problems)
    for expected in (
        "external_id is required", "email 'not-an-email' is not valid", "phone '12'", "gender 'robot'",
        "birth_date '1990-13-01' is not a date", "age 'abc' is not a whole number", "country 'XX'",
        "timezone 'Mars/Base'", "locale '!!'", "consent_email 'maybe'", "consent_at 'yesterday'",
    ):  # fmt: skip
        assert expected in text
    assert all(str(p).startswith("c.csv:7:") for p in problems)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"birth_date": "2030-01-01"}, "birth_date 2030-01-01 is not between"),
        ({"age": "131"}, "age 131 is not between 0 and 130"),
        ({"first_name": "x" * 201}, "first_name is longer than 200"),
    ],
)
def test_out_of_range_values(fields: dict[str, str], message: str) -> None:
    problems = parse({"external_id": "1", **fields})
    assert isinstance(problems, list) and message in str(problems[0])


def test_absent_columns_are_left_alone() -> None:
    row = parse({"external_id": "1", "email": ""})
    assert isinstance(row, ContactRow)
    assert row.values == {"email": None}  # present but blank: cleared
    assert row.tags is None and row.consents == ()  # absent: stored tags and consents stay


def test_json_lines_keep_their_types_and_nested_objects() -> None:
    row = parse(
        {"external_id": 7, "loyalty": "5", "vip": True, "attributes": {"Points": 10}, "im_ids": {"Telegram": "t1"},
         "tags": ["A", "b"]},
        typed=True,
    )  # fmt: skip
    assert isinstance(row, ContactRow)
    assert row.external_id == "7"
    assert row.values["attributes"] == {"loyalty": "5", "vip": True, "points": 10}
    assert row.values["im_ids"] == {"telegram": "t1"}
    assert row.tags == ("a", "b")


def test_unreadable_record_is_one_problem() -> None:
    problems = parse_contact(Record(3, {}, {}, "each line must be a JSON object"), "c.jsonl", default_country=None, now=NOW)
    assert problems == [Problem("c.jsonl", 3, 1, "each line must be a JSON object")]


@pytest.mark.parametrize(
    "address",
    [
        "Ann.Lee@EXAMPLE.com", "a+tag@example.net", "x@sub.example.co.uk", "o'neil@example.com", "a..b@example.com",
        ".a@example.com", "a@example", "a@-example.com", "a@localhost", "a@example..com", "a" * 65 + "@example.com",
        "a@" + "b" * 64 + ".com", "us@xn--bcher-kva.example", "user@bücher.example", "用户@例子.广告", "a@b.c",
        "a@test", "a@example.invalid", "a@123.com", "A@EXAMPLE.COM",
    ],
)  # fmt: skip
def test_fast_email_path_agrees_with_email_validator(address: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    from topslot.imports.fields import email

    try:
        expected: str | None = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    try:
        got: str | None = email(address)
    except ValueError:
        got = None
    assert got == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"external_id": {"a": 1}}, "c.csv:7:1: external_id must be text, not a JSON object"),
        ({"external_id": ["a"]}, "c.csv:7:1: external_id must be text, not a JSON array"),
        ({"external_id": True}, "c.csv:7:1: external_id must be text, not true/false"),
        ({"external_id": 1.5}, "c.csv:7:1: external_id must be text, not a decimal number"),
        ({"external_id": "1", "email": {"x": "a@example.com"}}, "c.csv:7:2: email must be text, not a JSON object"),
        ({"external_id": "1", "phone": False}, "c.csv:7:2: phone must be text, not true/false"),
        ({"external_id": "1", "age": True}, "c.csv:7:2: age must be a number, not true/false"),
        ({"external_id": "1", "age": {"years": 30}}, "c.csv:7:2: age must be a number, not a JSON object"),
        ({"external_id": "1", "consent_email": {"x": 1}}, "c.csv:7:2: consent_email must be yes/no, not a JSON object"),
        ({"external_id": "1", "im_wechat": ["wx"]}, "c.csv:7:2: im_wechat must be text, not a JSON array"),
        ({"external_id": "1", "im_ids": "wx"}, "c.csv:7:2: im_ids must be a JSON object, not text"),
        ({"external_id": "1", "im_ids": {"wechat": {"id": 1}}}, "c.csv:7:2: im_ids.wechat must be text, not a JSON object"),  # noqa: E501
        ({"external_id": "1", "tags": [{"a": 1}]}, "c.csv:7:2: tags must be text or a list of texts, not a JSON array"),
        ({"external_id": "1", "tags": 5.5}, "c.csv:7:2: tags must be text or a list of texts, not a decimal number"),
        ({"external_id": "1", "attributes": [1, 2]}, "c.csv:7:2: attributes must be a JSON object, not a JSON array"),
    ],
)
def test_json_values_of_the_wrong_type_are_refused(fields: dict[str, Any], message: str) -> None:
    """Today ``{"external_id": {"a": 1}}`` was stored as the id ``"{'a': 1}"``."""
    problems = parse(fields, typed=True)
    assert isinstance(problems, list) and [str(p) for p in problems] == [message]


def test_json_values_of_the_right_types_are_kept() -> None:
    row = parse(
        {"external_id": 42, "phone": 2025550101, "age": 30, "consent_email": True, "consent_sms": 0, "tags": [1, "a"],
         "im_ids": {"wechat": "wx", "line": None}, "attributes": {"deep": {"list": [1, 2.5, None]}}},
        typed=True,
    )  # fmt: skip
    assert isinstance(row, ContactRow)
    assert row.external_id == "42" and row.values["phone"] == "+12025550101" and row.values["age"] == 30
    assert [(c.channel, c.granted) for c in row.consents] == [("email", True), ("sms", False)]
    assert row.tags == ("1", "a") and row.values["im_ids"] == {"wechat": "wx"}
    assert row.values["attributes"] == {"deep": {"list": [1, 2.5, None]}}


def test_csv_text_is_never_type_checked_as_json() -> None:
    row = parse({"external_id": "{'a': 1}", "im_ids": "", "attributes": ""})
    assert isinstance(row, ContactRow) and row.external_id == "{'a': 1}"


def test_an_age_of_a_thousand_digits_is_refused_plainly() -> None:
    problems = parse({"external_id": "1", "age": "9" * 1000})
    assert isinstance(problems, list) and "age" in problems[0].message and "digits" not in problems[0].message
    assert len(problems[0].message) < 120
