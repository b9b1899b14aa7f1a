from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from daemon.imports.events import PurchaseRow, SearchRow, parse_event
from daemon.imports.reader import Record


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
