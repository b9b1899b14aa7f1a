"""Parsed rows cross to the writer process pickled: by their fields, restored equal."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from topslot.imports.compact import by_fields
from topslot.imports.contacts import ConsentRecord, ContactRow
from topslot.imports.events import PurchaseRow, SearchRow

AT = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)
ROWS = [
    ContactRow(
        3, "c-1", {"email": "a@example.com", "attributes": {"tier": "gold", "n": [1, None]}}, ("vip",),
        (ConsentRecord("email", True, "web form", AT), ConsentRecord("sms", False, None, AT)),
    ),
    ContactRow(4, "c-2", {}, None, ()),
    PurchaseRow(5, "c-1", "o-9", "sku-1", "cosmetics", Decimal("12.50"), "USD", AT),
    PurchaseRow(6, "c-2", "o-10", "sku-2", None, None, None, AT),
    SearchRow(7, "c-1", "lipstick", AT),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=lambda r: type(r).__name__)
def test_a_row_pickles_by_its_fields_and_comes_back_equal(row: object) -> None:
    assert type(row).__reduce__ is by_fields  # not dataclasses' per-object __setstate__
    assert by_fields(row) == (type(row), tuple(getattr(row, f.name) for f in dataclasses.fields(row)))  # type: ignore[arg-type]
    for protocol in (2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
        back = pickle.loads(pickle.dumps(row, protocol=protocol))
        assert back == row and type(back) is type(row)


def test_every_field_is_carried() -> None:
    for row in ROWS:
        assert [f.name for f in dataclasses.fields(row)] == list(type(row).__slots__)  # type: ignore[attr-defined]
