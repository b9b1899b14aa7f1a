"""One conversion as the shop reports it, validated field by field (pure).

The same rules serve the webhook's JSON objects and the rows of ``topslot conversions import``.
Messages never repeat the offending value (the webhook's answer must not reflect its input); the
location (JSON path, or file:line:column) says where it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from topslot.imports.limits import MAX_AMOUNT  # Numeric(14, 2); the same for purchases imported as events
from topslot.store.schema import CONVERSION_KINDS

MAX_ORDER_ID = 200
MAX_COUPON = 64
MAX_CLICK_ID = 100
MAX_CONTACT_REF = 200
MAX_UNITS = 1_000_000_000
MAX_CATEGORY = 100
KINDS = CONVERSION_KINDS  # order (a purchase, or its refund) | signup (a registered user)
Kind = Literal["order", "signup"]
CENT = Decimal("0.01")

# accepted spellings of each field (CSV headers are normalised: "Order ID" → order_id)
ALIASES: dict[str, tuple[str, ...]] = {
    "kind": ("kind", "type"),
    "order_id": ("order_id", "order", "signup_id", "user_id"),
    "coupon_code": ("coupon_code", "coupon", "code"),
    "click_id": ("click_id", "tsid"),
    "contact_ref": ("contact_id", "external_id", "customer_id"),
    "revenue": ("revenue", "amount", "total"),
    "discount": ("discount",),
    "units": ("units", "quantity", "qty"),
    "currency": ("currency",),
    "refund": ("refund",),
    "margin": ("margin",),
    "category": ("category", "product_category"),
    "occurred_at": ("occurred_at", "ordered_at", "created_at"),
}
FIELDS = tuple(ALIASES)
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f", ""}


@dataclass(frozen=True, slots=True)
class ConversionInput:
    """A validated order (or refund), or a signup. Amounts are positive; ``refund`` says they
    subtract. A signup (``kind="signup"``, a user who registered) has no amounts and no refund; its
    id (``order_id``, also read from ``signup_id`` or ``user_id``) is the shop's user id; it is
    credited to a campaign by the same rules as an order."""

    order_id: str
    occurred_at: datetime  # aware, UTC
    revenue: Decimal  # what the shopper paid, after the discount
    discount: Decimal = Decimal(0)
    units: int = 0
    currency: str | None = None  # ISO 4217, upper case; None: the campaign's
    refund: bool = False
    margin: Decimal | None = None  # 0..1: gross margin of this order
    coupon_code: str | None = None  # as typed (trimmed)
    click_id: str | None = None  # the ``tsid`` click token as received
    contact_ref: str | None = None  # the shop's contact id (contacts.external_id)
    kind: Kind = "order"
    category: str | None = None  # product category, for ``costs.category_margins``

    @property
    def key(self) -> tuple[str, str, bool]:
        """What makes a conversion a duplicate: the same kind and id with the same refund flag."""
        return (self.kind, self.order_id, self.refund)


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One bad field: its name as the caller knows it (``None``: the record as a whole)."""

    field: str | None
    message: str


def parse_conversion_fields(record: Mapping[str, Any]) -> ConversionInput | list[FieldProblem]:
    """Validate one record (keys already normalised to ``snake_case``); all problems, or the input.

    Unknown keys are ignored (shops send more than topslot needs). Text from CSV and typed JSON
    values are both accepted; JSON numbers for money are read through their text (no float
    rounding), JSON booleans for ``refund``.
    """
    problems: list[FieldProblem] = []
    values: dict[str, Any] = {}
    for name, aliases in ALIASES.items():
        given = [a for a in aliases if a in record and _present(record[a])]
        if len(given) > 1:
            problems.append(FieldProblem(given[1], f"{given[1]} and {given[0]} both given; use one"))
            continue
        if given:
            values[name] = (given[0], record[given[0]])

    def take(name: str, check: Any, required: bool = False) -> Any:
        if name not in values:
            if required:
                problems.append(FieldProblem(ALIASES[name][0], f"{ALIASES[name][0]} is required"))
            return None
        key, raw = values[name]
        try:
            return check(raw, key)
        except ValueError as exc:
            problems.append(FieldProblem(key, str(exc)))
            return None

    kind: Kind = take("kind", _kind) or "order"
    signup = kind == "signup"
    order_id = take("order_id", lambda v, k: _text(v, k, MAX_ORDER_ID), required=True)
    occurred_at = take("occurred_at", _instant, required=True)
    revenue = take("revenue", _money, required=not signup)
    discount = take("discount", _money)
    units = take("units", _units)
    currency = take("currency", _currency)
    refund = take("refund", _flag)
    margin = take("margin", _margin)
    coupon = take("coupon_code", lambda v, k: _text(v, k, MAX_COUPON))
    click = take("click_id", lambda v, k: _text(v, k, MAX_CLICK_ID))
    contact = take("contact_ref", lambda v, k: _text(v, k, MAX_CONTACT_REF))
    category = take("category", lambda v, k: _text(v, k, MAX_CATEGORY))
    if signup:
        for name, value in (("revenue", revenue), ("discount", discount), ("units", units), ("refund", refund)):
            if value:
                problems.append(FieldProblem(values[name][0], f"a signup has no {values[name][0]}"))
    if problems:
        return problems
    return ConversionInput(
        order_id=order_id,
        occurred_at=occurred_at,
        revenue=revenue if revenue is not None else Decimal(0),
        discount=discount if discount is not None else Decimal(0),
        units=units if units is not None else 0,
        currency=currency,
        refund=bool(refund),
        margin=margin,
        coupon_code=coupon,
        click_id=click,
        contact_ref=contact,
        kind=kind,
        category=category,
    )


# ---------------------------------------------------------------- single values


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _text(value: Any, name: str, limit: int) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{name} must be text")
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # over ``limit`` digits: never convert it
        raise ValueError(f"{name} is longer than {limit} characters")
    text = str(value).strip()
    if len(text) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    if not _PRINTABLE.match(text):
        raise ValueError(f"{name} contains control characters")
    return text


def _money(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"{name} must be a number such as 19.90")
    try:
        amount = Decimal(value) if isinstance(value, int) else Decimal(str(value).strip())  # int: any size
    except InvalidOperation:
        raise ValueError(f"{name} is not a number (write e.g. 19.90, a dot for decimals)") from None
    if not amount.is_finite():
        raise ValueError(f"{name} is not a finite number")
    if amount < 0:
        raise ValueError(f"{name} is negative; send refunds as refund=true with positive amounts")
    if amount > MAX_AMOUNT:
        raise ValueError(f"{name} is above {MAX_AMOUNT}")
    if amount != amount.quantize(CENT):
        raise ValueError(f"{name} has more than 2 decimals")
    return amount.quantize(CENT)


def _units(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{1,10}\s*", value):
        number = int(value)
    else:
        raise ValueError(f"{name} must be a whole number of 0 or more")
    if not 0 <= number <= MAX_UNITS:
        raise ValueError(f"{name} must be between 0 and {MAX_UNITS}")
    return number


def _kind(value: Any, name: str) -> Kind:
    if not isinstance(value, str) or value.strip().lower() not in KINDS:
        raise ValueError(f"{name} must be one of: {', '.join(KINDS)}")
    return "signup" if value.strip().lower() == "signup" else "order"


def _currency(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value.strip()):
        raise ValueError(f"{name} must be a 3-letter ISO 4217 code such as USD")
    return value.strip().upper()


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false")


def _margin(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"{name} must be a fraction between 0 and 1, such as 0.35")
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        margin = Decimal(text.rstrip("%").strip())
    except InvalidOperation:
        raise ValueError(f"{name} must be a fraction between 0 and 1 (0.35) or a percentage (35%)") from None
    if not margin.is_finite():
        raise ValueError(f"{name} is not a finite number")
    if percent:
        margin /= 100
    if not 0 <= margin <= 1:
        raise ValueError(f"{name} must be between 0 and 1 (or 0% and 100%)")
    return margin.quantize(Decimal("0.0001"))


def _instant(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO 8601 time such as 2027-05-06T09:15:00+08:00")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 time such as 2027-05-06T09:15:00+08:00") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name} has no UTC offset; add one such as +08:00 or Z")
    if "T" not in text.upper() and " " not in text:
        raise ValueError(f"{name} needs a time of day, not only a date")
    return parsed.astimezone(UTC)
