"""Event rows (pure): purchases and searches, one per record.

Columns: ``type`` (purchase | search), ``contact`` (the contact's external id; ``external_id`` or
``contact_id`` are accepted too), ``time`` (ISO 8601; no offset means UTC), and for a purchase
``order_id``, ``sku``, ``category``, ``amount``, ``currency``; for a search ``term``.
Categories are case-folded so that segments match ``Cosmetics`` and ``cosmetics`` alike.

``amount`` is a finite number from 0 to ``MAX_AMOUNT``: a refund is not a negative purchase but a
conversion with ``refund=true`` and a positive amount (``topslot conversions import``, as in
``topslot.attribution.inputs``), so a negative amount is refused. JSON Lines values are
type-checked first: text columns take text or a whole number, ``amount`` a number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from topslot.errors import Problem
from topslot.imports import fields as f
from topslot.imports.compact import by_fields
from topslot.imports.reader import Record

CONTACT_KEYS = ("contact", "external_id", "contact_id", "contact_external_id")
_TEXT_COLUMNS = {"type", *CONTACT_KEYS, "time", "order_id", "sku", "category", "currency", "term"}
MAX_TEXT = 200
MAX_TERM = 500


@dataclass(frozen=True, slots=True)
class PurchaseRow:
    line: int
    contact: str
    order_id: str
    sku: str
    category: str | None
    amount: Decimal | None
    currency: str | None
    purchased_at: datetime

    __reduce__ = by_fields  # pickled to the writer process: see topslot.imports.compact


@dataclass(frozen=True, slots=True)
class SearchRow:
    line: int
    contact: str
    term: str
    searched_at: datetime

    __reduce__ = by_fields  # pickled to the writer process: see topslot.imports.compact


EventRow = PurchaseRow | SearchRow


def normalise_category(category: str) -> str:
    return category.strip().casefold()


class _Row:
    """One record being read: collects every problem with its column."""

    __slots__ = ("record", "path", "problems")

    def __init__(self, record: Record, path: str):
        self.record, self.path = record, path
        self.problems: list[Problem] = []

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(self.path, self.record.line, self.record.column(name), message))

    def required(self, name: str, limit: int = MAX_TEXT, parse: Callable[[str], Any] | None = None) -> Any:
        value = f.text(self.record.fields.get(name))
        if value is None:
            self.problem(name, f"{name} is required")
            return None
        if len(value) > limit:
            self.problem(name, f"{name} is longer than {limit} characters")
            return None
        if parse is None:
            return value
        try:
            return parse(value)
        except ValueError as exc:
            self.problem(name, str(exc))
            return None

    def optional(self, name: str, parse: Callable[[str], Any]) -> Any:
        value = f.text(self.record.fields.get(name))
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            self.problem(name, str(exc))
            return None


def _time(value: str) -> datetime:
    return f.instant(value, "time")


def _amount(value: str) -> Decimal:
    amount = f.amount(value, "amount")
    if amount < 0:
        raise ValueError(
            f"amount {f.shown(value)!r} is negative: record refunds with `topslot conversions import` (refund=true)"
        )
    return amount


def _json_type_problems(record: Record, path: str) -> list[Problem]:
    """A problem for every JSON value of the wrong type (text columns, ``amount``)."""
    problems = []
    for name, value in record.fields.items():
        kind = f.TEXT if name in _TEXT_COLUMNS else f.NUMBER if name == "amount" else None
        why = kind and f.json_type_problem(value, name, kind)
        if why:
            problems.append(Problem(path, record.line, record.column(name), why))
    return problems


def parse_event(record: Record, path: str) -> EventRow | list[Problem]:
    """A purchase or search row, or every problem found in the record."""
    if record.error:
        return [Problem(path, record.line, 1, record.error)]
    if record.typed and (wrong := _json_type_problems(record, path)):
        return wrong
    raw = record.fields
    row = _Row(record, path)
    kind = (f.text(raw.get("type")) or "").lower()
    contact_key = next((k for k in CONTACT_KEYS if raw.get(k)), CONTACT_KEYS[0])
    contact = row.required(contact_key)
    when = row.required("time", parse=_time)
    if kind == "purchase":
        order_id = row.required("order_id")
        sku = row.required("sku")
        category = row.optional("category", normalise_category)
        amount = row.optional("amount", _amount)
        currency = row.optional("currency", f.currency)
        if not row.problems:
            return PurchaseRow(record.line, contact, order_id, sku, category or None, amount, currency, when)
    elif kind == "search":
        term = row.required("term", limit=MAX_TERM)
        if not row.problems:
            return SearchRow(record.line, contact, term, when)
    else:
        shown = f.text(raw.get("type"))
        row.problem(
            "type",
            f"type {shown!r} is not 'purchase' or 'search'" if shown else "type is required (purchase or search)",
        )
    return row.problems
