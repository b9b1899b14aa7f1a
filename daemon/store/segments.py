"""Compile a campaign's ``audience`` into a SQLAlchemy boolean expression over ``contacts`` (pure).

No SQL text is built from input: every value becomes a bound parameter. The same expression gives
the same contacts on SQLite and PostgreSQL:

- every condition is two-valued (a missing value makes a test false, never NULL), so ``not``
  is the exact complement;
- imported JSON attributes compare numbers as numbers, strings as strings and booleans as booleans
  (a condition written ``"5"`` does not match the number 5);
- ``age`` is computed from ``birth_date`` on the UTC date of ``now``; a contact without a birth
  date falls back to the ``age`` column;
- tags, purchase categories and search terms are case-folded on import and here; ``contains`` on a
  text field is case-insensitive (ASCII only on SQLite);
- ``purchased`` counts distinct orders (``min_count``) and sums their amounts (``min_amount``) among
  the matching purchases; ``within_days`` counts back from ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    and_,
    distinct,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from topslot.campaign import (
    AllOf,
    AnyOf,
    AnyTagCondition,
    AttributeCondition,
    Audience,
    ConsentCondition,
    NotCondition,
    PurchasedCondition,
    SearchedCondition,
    TagCondition,
)
from topslot.channel import ChannelSpec, spec_of
from topslot.errors import TopslotError
from topslot.imports import fields
from topslot.imports.contacts import normalise_tag
from topslot.imports.events import normalise_category
from topslot.imports.reader import normalise_key
from topslot.store.schema import consents, contact_tags, contacts, purchases, searches, suppressions

Expr = ColumnElement[bool]
TEXT_COLUMNS = ("external_id", "email", "phone", "first_name", "last_name", "gender", "country", "timezone", "locale")
DATE_COLUMNS = ("birth_date",)


class SegmentError(TopslotError):
    """An audience condition that cannot be evaluated (e.g. ``contains`` on age)."""


# ---------------------------------------------------------------- the audience


def audience_filter(audience: Audience, now: datetime) -> Expr:
    """Who is in the segment at ``now`` (aware datetime)."""
    if now.tzinfo is None:
        raise ValueError("audience_filter needs an aware datetime")
    parts: list[Expr] = []
    if audience.all:
        parts.append(and_(*(condition_filter(c, now) for c in audience.all)))
    if audience.any:
        parts.append(or_(*(condition_filter(c, now) for c in audience.any)))
    if audience.not_ is not None:
        parts.append(not_(condition_filter(audience.not_, now)))
    if audience.exclude_tags:
        parts.append(not_(_has_any_tag(audience.exclude_tags)))
    return and_(true(), *parts)


def condition_filter(condition: Any, now: datetime) -> Expr:
    match condition:
        case AllOf():
            return and_(*(condition_filter(c, now) for c in condition.all))
        case AnyOf():
            return or_(*(condition_filter(c, now) for c in condition.any))
        case NotCondition():
            return not_(condition_filter(condition.not_, now))
        case AttributeCondition():
            return attribute_filter(condition, now)
        case TagCondition():
            return _has_any_tag([condition.tag])
        case AnyTagCondition():
            return _has_any_tag(condition.any_tag)
        case ConsentCondition():
            return has_consent(condition.consent)
        case PurchasedCondition():
            return purchased_filter(condition, now)
        case SearchedCondition():
            return searched_filter(condition, now)
    raise SegmentError(f"unknown audience condition {type(condition).__name__}")


# ---------------------------------------------------------------- channels


def _spec(channel: str) -> ChannelSpec:
    try:
        return spec_of(channel)
    except KeyError as exc:
        raise SegmentError(str(exc.args[0])) from None


def has_address(channel: str, im_provider: str | None = None) -> Expr:
    """The contact has an address on ``channel`` (keyed channels: under ``im_provider``, or any)."""
    spec = _spec(channel)
    if spec.keyed and im_provider:
        return keyed_id(spec, normalise_key(im_provider)).isnot(None)
    return contacts.c[spec.contact_field].isnot(None)


def keyed_id(spec: ChannelSpec, key: str) -> Any:
    """The contact's id under ``key`` of a keyed channel (the phone for a phone key without one)."""
    found: Any = func.nullif(_json_text(contacts.c[spec.contact_field], key), "")  # blank: no id, as in Python
    return func.coalesce(found, contacts.c.phone) if key in spec.phone_keys else found


def has_consent(channel: str) -> Expr:
    return exists(
        select(literal(1)).where(
            consents.c.contact_id == contacts.c.id, consents.c.channel == channel, consents.c.granted == true()
        )
    )


def is_suppressed(channel: str, im_provider: str | None = None) -> Expr:
    """The contact's address for ``channel`` is on the suppression list, compared as the channel
    writes suppressions (``ChannelSpec.suppression_address``: email lower-cased; keyed channels
    ``provider:id``)."""
    spec = _spec(channel)
    address: Any = contacts.c[spec.contact_field]
    if spec.keyed:
        if not im_provider:
            return false()  # keyed suppressions are "provider:id"; without a provider there is no address
        key = normalise_key(im_provider)
        address = literal(f"{key}:", String).concat(keyed_id(spec, key))
    if spec.lower_case:
        address = func.lower(address)
    return exists(select(literal(1)).where(suppressions.c.channel == channel, suppressions.c.address == address))


def channel_eligible(channel: str, im_provider: str | None = None) -> Expr:
    """Has an address for the channel, granted consent for it, and is not suppressed there."""
    return and_(has_address(channel, im_provider), has_consent(channel), not_(is_suppressed(channel, im_provider)))


# ---------------------------------------------------------------- tags, purchases, searches


def _has_any_tag(tags: Sequence[str]) -> Expr:
    wanted = sorted({normalise_tag(t) for t in tags})
    return exists(select(literal(1)).where(contact_tags.c.contact_id == contacts.c.id, contact_tags.c.tag.in_(wanted)))


def _names(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def purchased_filter(condition: PurchasedCondition, now: datetime) -> Expr:
    p = condition.purchased
    where: list[Expr] = [purchases.c.contact_id == contacts.c.id]
    categories = _names(p.category)
    if categories:
        where.append(purchases.c.category.in_(sorted({normalise_category(c) for c in categories})))
    skus = _names(p.sku)
    if skus:
        where.append(purchases.c.sku.in_(sorted(set(skus))))
    if p.within_days is not None:
        where.append(purchases.c.purchased_at >= now - timedelta(days=p.within_days))
    if p.min_count == 1 and p.min_amount is None:
        return exists(select(literal(1)).where(*where))
    tests: list[Expr] = []
    if p.min_count > 1:
        orders = select(func.count(distinct(purchases.c.order_id))).where(*where).scalar_subquery()
        tests.append(orders >= p.min_count)
    if p.min_amount is not None:
        spent = select(func.coalesce(func.sum(purchases.c.amount), 0)).where(*where).scalar_subquery()
        tests.append(spent >= literal(float(p.min_amount), Float))
    return and_(exists(select(literal(1)).where(*where)), *tests)


def searched_filter(condition: SearchedCondition, now: datetime) -> Expr:
    s = condition.searched
    terms = sorted({t.casefold() for t in s.terms})
    where: list[Expr] = [
        searches.c.contact_id == contacts.c.id,
        or_(*(searches.c.term_folded.contains(t, autoescape=True) for t in terms)),
    ]
    if s.within_days is not None:
        where.append(searches.c.searched_at >= now - timedelta(days=s.within_days))
    return exists(select(literal(1)).where(*where))


# ---------------------------------------------------------------- attributes


def attribute_filter(condition: AttributeCondition, now: datetime) -> Expr:
    name = normalise_key(condition.attribute)
    op, value = condition.operator
    if name == "age":
        return _age_filter(op, value, now.astimezone(UTC).date())
    if name in TEXT_COLUMNS or name in DATE_COLUMNS:
        return _column_filter(name, op, value)
    return _json_filter(name, op, value)


def _compare(column: Any, op: str, value: Any) -> Expr:
    """``column op value`` for one scalar operator; the caller guarantees column is not NULL."""
    match op:
        case "equals":
            return column == value
        case "not_equals":
            return column != value
        case "gte":
            return column >= value
        case "lte":
            return column <= value
        case "gt":
            return column > value
        case "lt":
            return column < value
    raise SegmentError(f"operator {op} is not a comparison")


def _apply(column: Any, op: str, value: Any, convert: Any) -> Expr:
    """Any operator but ``exists``/``contains`` on a value that is known to be present."""
    if op == "in":
        return and_(column.isnot(None), column.in_([convert(v) for v in value]))
    if op == "between":
        low, high = convert(value[0]), convert(value[1])
        return and_(column.isnot(None), column >= low, column <= high)
    return and_(column.isnot(None), _compare(column, op, convert(value)))


def _column_filter(name: str, op: str, value: Any) -> Expr:
    column = contacts.c[name]
    if op == "exists":
        present = column.isnot(None) if name in DATE_COLUMNS else and_(column.isnot(None), column != "")
        return present if value else not_(present)
    if op == "contains":
        if name in DATE_COLUMNS:
            raise SegmentError(f"'contains' does not apply to {name}")
        return and_(column.isnot(None), func.lower(column).contains(str(value).lower(), autoescape=True))
    if name in DATE_COLUMNS:
        return _apply(column, op, value, _as_date)
    return _apply(column, op, value, lambda v: _as_column_text(name, v))


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise SegmentError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _as_column_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        raise SegmentError(f"{name} is text; compare it with text, not {value}")
    text = value.isoformat() if isinstance(value, date) else str(value)
    if name == "gender":
        try:
            return fields.gender(text)
        except ValueError:
            return text.lower()
    if name == "country":
        return text.upper()
    return text


# ---------------------------------------------------------------- age


def years_before(today: date, years: int) -> date:
    """The date ``years`` before ``today`` (29 February falls back to the 28th)."""
    year = today.year - years
    if year < 1:
        return date.min
    try:
        return today.replace(year=year)
    except ValueError:
        return today.replace(year=year, day=28)


def _age_at_least(years: int, today: date) -> Expr:
    born, age = contacts.c.birth_date, contacts.c.age
    return or_(
        and_(born.isnot(None), born <= years_before(today, years)),
        and_(born.is_(None), age.isnot(None), age >= years),
    )


def _age_known() -> Expr:
    return or_(contacts.c.birth_date.isnot(None), contacts.c.age.isnot(None))


def _age_range(low: int | None, high: int | None, today: date) -> Expr:
    parts: list[Expr] = [_age_known()]
    if low is not None:
        parts.append(_age_at_least(low, today))
    if high is not None:
        parts.append(not_(_age_at_least(high + 1, today)))
    if low is not None and high is not None and low > high:
        return false()
    return and_(*parts)


def _age_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise SegmentError(f"age is a number of years, not {value!r}")
    return float(value)


def _age_filter(op: str, value: Any, today: date) -> Expr:
    if op == "exists":
        return _age_known() if value else not_(_age_known())
    if op == "contains":
        raise SegmentError("'contains' does not apply to age")
    if op == "in":
        return or_(*(_age_filter("equals", v, today) for v in value))
    if op == "not_equals":
        return and_(_age_known(), not_(_age_filter("equals", value, today)))
    if op == "between":
        low, high = _age_number(value[0]), _age_number(value[1])
        return _age_range(math.ceil(low), math.floor(high), today)
    n = _age_number(value)
    match op:
        case "equals":
            return _age_range(int(n), int(n), today) if n.is_integer() else false()
        case "gte":
            return _age_range(math.ceil(n), None, today)
        case "gt":
            return _age_range(math.floor(n) + 1, None, today)
        case "lte":
            return _age_range(None, math.floor(n), today)
        case "lt":
            return _age_range(None, math.ceil(n) - 1, today)
    raise SegmentError(f"unknown operator {op}")


# ---------------------------------------------------------------- JSON attributes


class _JsonValue(FunctionElement[Any]):
    """A typed read of ``attributes[key]``: NULL unless the stored JSON value has that type."""

    inherit_cache = True
    kind = ""

    def __init__(self, column: Any, key: str):
        super().__init__(column, literal(key, String))


class _json_text(_JsonValue):  # noqa: N801 - SQL function style
    inherit_cache = True
    type = String()
    name = "json_text"
    kind = "text"


class _json_number(_JsonValue):  # noqa: N801
    inherit_cache = True
    type = Float()
    name = "json_number"
    kind = "number"


class _json_bool(_JsonValue):  # noqa: N801
    inherit_cache = True
    type = Integer()
    name = "json_bool"
    kind = "bool"


class _json_present(_JsonValue):  # noqa: N801
    inherit_cache = True
    type = Integer()
    name = "json_present"
    kind = "present"


def _json_args(element: _JsonValue, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    column, key = element.clauses
    return compiler.process(column, **kw), compiler.process(key, **kw)


@compiles(_JsonValue, "sqlite")
def _json_sqlite(element: _JsonValue, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _json_args(element, compiler, **kw)
    path = f"""('$."' || {key} || '"')"""  # keys are normalise_key()'d: [0-9a-z_] only
    t = f"json_type({col}, {path})"
    v = f"json_extract({col}, {path})"
    return {
        "text": f"(CASE WHEN {t} = 'text' THEN {v} END)",
        "number": f"(CASE WHEN {t} IN ('integer', 'real') THEN {v} END)",
        "bool": f"(CASE {t} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)",
        "present": f"(CASE WHEN {t} IS NOT NULL AND {t} != 'null' THEN 1 END)",
    }[element.kind]


@compiles(_JsonValue, "postgresql")
def _json_postgresql(element: _JsonValue, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _json_args(element, compiler, **kw)
    t = f"jsonb_typeof({col} -> CAST({key} AS TEXT))"
    v = f"({col} ->> CAST({key} AS TEXT))"
    return {
        "text": f"(CASE WHEN {t} = 'string' THEN {v} END)",
        "number": f"(CASE WHEN {t} = 'number' THEN CAST({v} AS DOUBLE PRECISION) END)",
        "bool": f"(CASE WHEN {t} = 'boolean' THEN CAST(CAST({v} AS BOOLEAN) AS INTEGER) END)",
        "present": f"(CASE WHEN {t} IS NOT NULL AND {t} != 'null' THEN 1 END)",
    }[element.kind]


def _json_filter(key: str, op: str, value: Any) -> Expr:
    column = contacts.c.attributes
    if op == "exists":
        present = _json_present(column, key).isnot(None)
        return present if value else not_(present)
    if op == "contains":
        text = _json_text(column, key)
        return and_(text.isnot(None), func.lower(text).contains(str(value).lower(), autoescape=True))
    sample = value[0] if op in ("in", "between") else value
    if op == "in":
        kinds = {_json_kind_of(v) for v in value}
        if len(kinds) > 1:
            return or_(*(_json_filter(key, "equals", v) for v in value))
    kind = _json_kind_of(sample)
    if kind == "bool":
        if op not in ("equals", "not_equals", "in"):
            raise SegmentError(f"attribute {key}: true/false can only be compared with equals, not_equals or in")
        return _apply(_json_bool(column, key), op, value, int)
    if kind == "number":
        return _apply(_json_number(column, key), op, value, float)
    return _apply(_json_text(column, key), op, value, _as_json_text)


def _json_kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "number"
    return "text"


def _as_json_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)
