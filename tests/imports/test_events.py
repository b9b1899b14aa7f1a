from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from topslot.imports.events import PurchaseRow, SearchRow, parse_event
from topslot.imports.reader import Record


def record(**fields: str) -> Record:
    return Record(4, fields, {name: i + 1 for i, name in enumerate(fields)})


def test_purchase_row() -> None:
    row = parse_event(
        record(type="Purchase", contact="c1", order_id="o1", sku="LIP-1", category=" Cosmetics ", amount="12.50",
               currency="usd", time="2027-05-06T07:30:00+08:00"),
        "e.csv",
    )  # fmt: skip
    assert row == PurchaseRow(4, "c1", "o1", "LIP-1", "cosmetics", Decimal("12.50"), "USD", datetime(2027, 5, 5, 23, 30, tzinfo=UTC))


def test_search_row_with_naive_time_is_utc() -> None:
    row = parse_event(record(type="search", external_id="c1", term="Lipstick", time="2027-05-06 08:00"), "e.csv")
    assert row == SearchRow(4, "c1", "Lipstick", datetime(2027, 5, 6, 8, tzinfo=UTC))


def test_every_problem_is_reported() -> None:
    problems = parse_event(record(type="purchase", contact="", order_id="", amount="lots", currency="dollars", time="soon"), "e.csv")
    assert isinstance(problems, list)
    text = [str(p) for p in problems]
    assert text == [
        "e.csv:4:2: contact is required",
        "e.csv:4:6: time 'soon' is not an ISO 8601 time such as 2027-05-06T07:30:00+08:00",
        "e.csv:4:3: order_id is required",
        "e.csv:4:1: sku is required",
        "e.csv:4:4: amount 'lots' is not a number",
        "e.csv:4:5: currency 'dollars' is not a 3-letter ISO 4217 code such as 'USD'",
    ]


def test_unknown_type() -> None:
    problems = parse_event(record(type="refund", contact="c1", time="2027-01-01"), "e.csv")
    assert isinstance(problems, list) and str(problems[-1]) == "e.csv:4:1: type 'refund' is not 'purchase' or 'search'"


REFUNDS = "record refunds with `topslot conversions import` (refund=true)"


def purchase(amount: object, typed: bool = False, **more: object) -> list[str] | PurchaseRow | SearchRow:
    fields = {"type": "purchase", "contact": "c1", "order_id": "o1", "sku": "s1", "time": "2027-01-01T00:00:00Z"}
    fields |= {"amount": amount, **more}
    result = parse_event(Record(4, fields, {name: i + 1 for i, name in enumerate(fields)}, typed=typed), "e.csv")
    return [str(p) for p in result] if isinstance(result, list) else result


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("inf", "e.csv:4:6: amount 'inf' is not a finite number"),
        ("-Infinity", "e.csv:4:6: amount '-Infinity' is not a finite number"),
        ("nan", "e.csv:4:6: amount 'nan' is not a finite number"),
        ("sNaN", "e.csv:4:6: amount 'sNaN' is not a finite number"),
        ("1e309", "e.csv:4:6: amount '1e309' is above the maximum of 999999999999.99"),
        ("1e30", "e.csv:4:6: amount '1e30' is above the maximum of 999999999999.99"),
        ("1000000000000", "e.csv:4:6: amount '1000000000000' is above the maximum of 999999999999.99"),
        ("9" * 5000, "e.csv:4:6: amount '99999999999999999999...' is above the maximum of 999999999999.99"),
        ("-5", f"e.csv:4:6: amount '-5' is negative: {REFUNDS}"),
        ("-0.01", f"e.csv:4:6: amount '-0.01' is negative: {REFUNDS}"),
    ],
)
def test_absurd_and_negative_amounts_are_refused(amount: str, message: str) -> None:
    assert purchase(amount) == [message]


def test_sane_amounts_are_kept() -> None:
    for amount, expected in (("0", 0), ("999999999999.99", Decimal("999999999999.99")), ("1e3", 1000)):
        row = purchase(amount)
        assert isinstance(row, PurchaseRow) and row.amount == expected
    row = purchase(19.9, typed=True)
    assert isinstance(row, PurchaseRow) and row.amount == Decimal("19.9")


@pytest.mark.parametrize(
    ("amount", "more", "message"),
    [
        (True, {}, "e.csv:4:6: amount must be a number, not true/false"),
        ({"value": 5}, {}, "e.csv:4:6: amount must be a number, not a JSON object"),
        ([5], {}, "e.csv:4:6: amount must be a number, not a JSON array"),
        ("5", {"contact": {"id": "c1"}}, "e.csv:4:2: contact must be text, not a JSON object"),
        ("5", {"order_id": True}, "e.csv:4:3: order_id must be text, not true/false"),
        ("5", {"sku": ["a", "b"]}, "e.csv:4:4: sku must be text, not a JSON array"),
        ("5", {"category": 1.5}, "e.csv:4:7: category must be text, not a decimal number"),
    ],
)
def test_json_values_of_the_wrong_type_are_refused(amount: object, more: dict[str, object], message: str) -> None:
    assert purchase(amount, typed=True, **more) == [message]
