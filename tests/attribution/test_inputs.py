"""Validation of one conversion record (webhook object or CSV row)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from daemon.attribution.inputs import ConversionInput, FieldProblem, parse_conversion_fields

GOOD = {"order_id": "A-1", "occurred_at": "2027-05-06T09:15:00+08:00", "revenue": "19.90"}


def test_minimal_and_full_records() -> None:
    minimal = parse_conversion_fields(GOOD)
    assert minimal == ConversionInput("A-1", datetime(2027, 5, 6, 1, 15, tzinfo=UTC), D("19.90"))
    full = parse_conversion_fields(
        {
            **GOOD,
            "coupon": " mom-7k2q ",
            "tsid": "AQEEbWFpbg",
            "contact_id": 42,
            "discount": 5,
            "units": "3",
            "currency": "usd",
            "refund": "yes",
            "margin": "35%",
        }
    )
    assert isinstance(full, ConversionInput)
    assert (full.coupon_code, full.click_id, full.contact_ref) == ("mom-7k2q", "AQEEbWFpbg", "42")
    assert (full.discount, full.units, full.currency, full.refund, full.margin) == (
        D("5.00"),
        3,
        "USD",
        True,
        D("0.3500"),
    )
    assert full.key == ("A-1", True)


def test_every_problem_is_reported_without_echoing_values() -> None:
    problems = parse_conversion_fields(
        {
            "order_id": "x" * 201,
            "occurred_at": "2027-05-06",
            "revenue": "-1",
            "discount": "1.234",
            "units": "2.5",
            "currency": "dollars",
            "refund": "maybe",
            "margin": "1.5",
            "coupon": "<script>",
        }
    )
    assert isinstance(problems, list)
    fields = {p.field for p in problems}
    assert fields == {"order_id", "occurred_at", "revenue", "discount", "units", "currency", "refund", "margin"}
    assert all("<script>" not in p.message and "dollars" not in p.message for p in problems)
    by = {p.field: p.message for p in problems}
    assert "refund=true" in by["revenue"] and "2 decimals" in by["discount"] and "offset" in by["occurred_at"]


def test_missing_required_fields_and_two_spellings_of_one() -> None:
    assert parse_conversion_fields({}) == [
        FieldProblem("order_id", "order_id is required"),
        FieldProblem("occurred_at", "occurred_at is required"),
        FieldProblem("revenue", "revenue is required"),
    ]
    both = parse_conversion_fields({**GOOD, "coupon": "A", "coupon_code": "B"})
    assert isinstance(both, list) and both[0].field == "coupon"


def test_json_types_are_checked() -> None:
    problems = parse_conversion_fields({**GOOD, "revenue": True, "units": 1.5, "order_id": ["x"], "refund": 1})
    assert isinstance(problems, list)
    assert {p.field for p in problems} == {"revenue", "units", "order_id", "refund"}


def test_z_offsets_blank_optionals_and_control_characters() -> None:
    record = parse_conversion_fields({**GOOD, "occurred_at": "2027-05-06T01:15:00Z", "coupon": "  ", "margin": ""})
    assert isinstance(record, ConversionInput) and record.coupon_code is None and record.margin is None
    assert record.occurred_at == datetime(2027, 5, 6, 1, 15, tzinfo=UTC)
    bad = parse_conversion_fields({**GOOD, "order_id": "a\x00b"})
    assert isinstance(bad, list) and "control" in bad[0].message
