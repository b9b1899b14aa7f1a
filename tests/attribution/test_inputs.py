"""Validation of one conversion record (webhook object or CSV row)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from topslot.attribution.inputs import ConversionInput, FieldProblem, parse_conversion_fields

AT = "2027-05-06T09:15:00+08:00"
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
    assert full.key == ("order", "A-1", True)


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


@pytest.mark.parametrize(
    ("revenue", "message"),
    [
        ("inf", "revenue is not a finite number"),
        ("nan", "revenue is not a finite number"),
        (float("inf"), "revenue is not a finite number"),
        (float("nan"), "revenue is not a finite number"),
        ("1e309", "revenue is above 999999999999.99"),
        ("1e30", "revenue is above 999999999999.99"),
        (1e30, "revenue is above 999999999999.99"),
        pytest.param(10**5000, "revenue is above 999999999999.99", id="5000-digit-int"),
        ("-5", "revenue is negative; send refunds as refund=true with positive amounts"),
        (True, "revenue must be a number such as 19.90"),
        ({"amount": 5}, "revenue must be a number such as 19.90"),
        ([5], "revenue must be a number such as 19.90"),
    ],
)
def test_absurd_amounts_and_wrong_types_are_refused(revenue: object, message: str) -> None:
    assert parse_conversion_fields({**GOOD, "revenue": revenue}) == [FieldProblem("revenue", message)]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"order_id": {"a": 1}}, FieldProblem("order_id", "order_id must be text")),
        pytest.param(
            {"order_id": 10**5000}, FieldProblem("order_id", "order_id is longer than 200 characters"), id="huge-id"
        ),
        ({"coupon": True}, FieldProblem("coupon", "coupon must be text")),
        ({"contact_id": 1.5}, FieldProblem("contact_id", "contact_id must be text")),
        ({"units": True}, FieldProblem("units", "units must be a whole number")),
        pytest.param(
            {"units": 10**5000}, FieldProblem("units", "units must be between 0 and 1000000000"), id="huge-units"
        ),
        ({"margin": False}, FieldProblem("margin", "margin must be a fraction between 0 and 1, such as 0.35")),
        ({"currency": ["USD"]}, FieldProblem("currency", "currency must be a 3-letter ISO 4217 code such as USD")),
        (
            {"occurred_at": 1715000000},
            FieldProblem("occurred_at", f"occurred_at must be an ISO 8601 time such as {AT}"),
        ),  # noqa: E501
        ({"click_id": "a\x00b"}, FieldProblem("click_id", "click_id contains control characters")),
    ],
)
def test_json_values_of_the_wrong_type_are_refused(fields: dict[str, object], problem: FieldProblem) -> None:
    assert parse_conversion_fields({**GOOD, **fields}) == [problem]


def test_refunds_are_positive_amounts_with_the_refund_flag() -> None:
    refund = parse_conversion_fields({**GOOD, "refund": True})
    assert isinstance(refund, ConversionInput) and refund.refund and refund.revenue == D("19.90")


def test_signups_have_an_id_a_time_and_no_amounts() -> None:
    at = "2027-05-06T09:15:00+08:00"
    user = parse_conversion_fields({"type": "Signup", "user_id": "u-9", "occurred_at": at, "tsid": "AQEEbWFpbg"})
    assert isinstance(user, ConversionInput)
    assert (user.kind, user.order_id, user.revenue, user.refund, user.key) == ("signup", "u-9", 0, False, user.key)
    assert user.key == ("signup", "u-9", False) and user.click_id == "AQEEbWFpbg"
    paid = parse_conversion_fields(
        {"kind": "signup", "signup_id": "u-9", "occurred_at": at, "amount": "5", "refund": True}
    )
    assert paid == [FieldProblem("amount", "a signup has no amount"), FieldProblem("refund", "a signup has no refund")]
    odd = parse_conversion_fields({"kind": "lead", "order_id": "x", "occurred_at": at, "revenue": "1"})
    assert odd == [FieldProblem("kind", "kind must be one of: order, signup")]
    no_id = parse_conversion_fields({"kind": "signup", "occurred_at": at})
    assert no_id == [FieldProblem("order_id", "order_id is required")]


def test_an_order_may_name_its_product_category() -> None:
    record = parse_conversion_fields({**GOOD, "product_category": " shoes "})
    assert isinstance(record, ConversionInput) and record.category == "shoes" and record.kind == "order"
    long = parse_conversion_fields({**GOOD, "category": "x" * 101})
    assert long == [FieldProblem("category", "category is longer than 100 characters")]
