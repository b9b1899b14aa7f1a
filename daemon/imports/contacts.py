"""Contact rows: validate and normalise one record from a contacts file (pure).

Columns: external_id (required), email, phone, first_name, last_name, gender, birth_date or age,
country, timezone, locale, tags (``;`` or ``|`` separated), consent_email / consent_sms / consent_im,
consent_source, consent_at, im_<provider> (im_wechat, im_telegram...); every other column is kept
as an attribute. Only the columns a file has are written: a file without ``tags`` keeps the tags
already stored, an empty consent cell keeps the consent already stored.

JSON Lines values are type-checked first: text columns take text or a whole number, ``age`` a
number, consents yes/no text, true/false or 0/1, ``tags`` text or a list of texts, ``im_ids`` and
``attributes`` an object. A value of the wrong type is the row's only reported problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any

from topslot.channel import CHANNELS
from topslot.errors import Problem
from topslot.imports import fields as f
from topslot.imports.compact import by_fields
from topslot.imports.reader import Record, normalise_key

TEXT_LIMITS = {"external_id": 200, "first_name": 200, "last_name": 200}
_CONSENT_COLUMNS = {f"consent_{ch}": ch for ch in CHANNELS}
_RESERVED = {
    "external_id", "email", "phone", "first_name", "last_name", "gender", "birth_date", "age",
    "country", "timezone", "locale", "tags", "consent_source", "consent_at", "im_ids", "attributes",
    "id", "created_at", "updated_at", *_CONSENT_COLUMNS,
}  # fmt: skip
_TEXT_COLUMNS = {
    "external_id", "email", "phone", "first_name", "last_name", "gender", "birth_date", "country",
    "timezone", "locale", "consent_source", "consent_at",
}  # fmt: skip
_TAG_SPLIT = re.compile(r"[;|]")
_MIN_BIRTH = date(1900, 1, 1)
MAX_AGE = 130


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    channel: str
    granted: bool
    source: str | None
    recorded_at: datetime

    __reduce__ = by_fields  # pickled to the writer process: see topslot.imports.compact


@dataclass(frozen=True, slots=True)
class ContactRow:
    line: int
    external_id: str
    values: dict[str, Any]  # contacts columns the file has (None clears a value)
    tags: tuple[str, ...] | None  # None: the file has no tags column, keep the stored tags
    consents: tuple[ConsentRecord, ...]

    __reduce__ = by_fields  # pickled to the writer process: see topslot.imports.compact


def normalise_tag(tag: str) -> str:
    return tag.strip().casefold()


def parse_contact(
    record: Record, path: str, *, default_country: str | None, now: datetime
) -> ContactRow | list[Problem]:
    """A clean ``ContactRow``, or every problem found in the record."""
    if record.error:
        return [Problem(path, record.line, 1, record.error)]
    if record.typed:
        wrong = list(_json_type_problems(record.fields))
        if wrong:
            return [Problem(path, record.line, record.column(name), why) for name, why in wrong]
    problems: list[Problem] = []
    raw = record.fields

    def check(name: str, parse: Callable[[str], Any]) -> Any:
        value = f.text(raw.get(name))
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            problems.append(Problem(path, record.line, record.column(name), str(exc)))
            return None

    external_id = f.text(raw.get("external_id"))
    if external_id is None:
        problems.append(Problem(path, record.line, record.column("external_id"), "external_id is required"))
    for name, limit in TEXT_LIMITS.items():
        value = f.text(raw.get(name))
        if value is not None and len(value) > limit:
            problems.append(
                Problem(path, record.line, record.column(name), f"{name} is longer than {limit} characters")
            )

    country = check("country", f.country)
    values: dict[str, Any] = {
        "email": check("email", f.email),
        "phone": check("phone", lambda v: f.phone(v, country or default_country)),
        "first_name": f.text(raw.get("first_name")),
        "last_name": f.text(raw.get("last_name")),
        "gender": check("gender", f.gender),
        "birth_date": check("birth_date", lambda v: _birth_date(v, now)),
        "age": check("age", _age),
        "country": country,
        "timezone": check("timezone", f.timezone),
        "locale": check("locale", f.locale),
    }
    values = {k: v for k, v in values.items() if k in raw}

    im_ids = _im_ids(raw)
    if im_ids is not None:
        values["im_ids"] = im_ids or None
    attributes = _attributes(raw, typed=record.typed)
    if attributes is not None:
        values["attributes"] = attributes or None

    source = f.text(raw.get("consent_source"))
    recorded_at = check("consent_at", lambda v: f.instant(v, "consent_at")) or now
    consents = []
    for column, channel in _CONSENT_COLUMNS.items():
        granted = check(column, partial(f.consent, name=column))
        if granted is not None:
            consents.append(ConsentRecord(channel, granted, source, recorded_at))

    tags = _tags(raw.get("tags")) if "tags" in raw else None
    if problems or external_id is None:
        return problems
    return ContactRow(record.line, external_id, values, tags, tuple(consents))


def _json_type_problems(raw: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(column, why) for every JSON value of the wrong type (see the module's docstring)."""
    for name, value in raw.items():
        if name in _TEXT_COLUMNS or (name.startswith("im_") and name != "im_ids"):
            why = f.json_type_problem(value, name, f.TEXT)
        elif name == "age":
            why = f.json_type_problem(value, name, f.NUMBER)
        elif name in _CONSENT_COLUMNS:
            why = f.json_type_problem(value, name, f.YES_NO)
        elif name == "tags":
            why = None if _tags_fit(value) else f"tags must be text or a list of texts, not {f.json_type(value)}"
        elif name in ("im_ids", "attributes") and value is not None and not isinstance(value, dict):
            why = f"{name} must be a JSON object, not {f.json_type(value)}"
        elif name == "im_ids" and value is not None:
            why = next(filter(None, (f.json_type_problem(v, f"im_ids.{k}", f.TEXT) for k, v in value.items())), None)
        else:
            continue
        if why:
            yield name, why


def _tags_fit(value: Any) -> bool:
    """Text or a whole number, or a list of them (``null`` clears the tags)."""
    items = value if isinstance(value, list) else [] if value is None else [value]
    return all(isinstance(t, str | int) and not isinstance(t, bool) for t in items)


def _birth_date(value: str, now: datetime) -> date:
    born = f.iso_date(value, "birth_date")
    if not _MIN_BIRTH <= born <= now.date():
        raise ValueError(f"birth_date {value} is not between {_MIN_BIRTH} and today")
    return born


def _age(value: str) -> int:
    age = f.integer(value, "age")
    if not 0 <= age <= MAX_AGE:
        raise ValueError(f"age {age} is not between 0 and {MAX_AGE}")
    return age


def _tags(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else _TAG_SPLIT.split(f.text(value) or "")
    seen = dict.fromkeys(normalise_tag(str(t)) for t in items)
    return tuple(t for t in seen if t)


def _im_ids(raw: dict[str, Any]) -> dict[str, str] | None:
    """{provider: id} from im_<provider> columns or a JSON ``im_ids`` object; None if the file has neither."""
    columns = {k[3:]: v for k, v in raw.items() if k.startswith("im_") and k != "im_ids"}
    nested = raw.get("im_ids")
    if isinstance(nested, dict):
        columns.update({normalise_key(k): v for k, v in nested.items()})
    elif not columns and "im_ids" not in raw:
        return None
    return {provider: text for provider, v in columns.items() if provider and (text := f.text(v))}


def _attributes(raw: dict[str, Any], *, typed: bool) -> dict[str, Any] | None:
    extra = {k: v for k, v in raw.items() if k not in _RESERVED and not k.startswith("im_")}
    nested = raw.get("attributes")
    if isinstance(nested, dict):
        extra.update({normalise_key(k): v for k, v in nested.items()})
    elif not extra and "attributes" not in raw:
        return None
    convert = (lambda v: v) if typed else f.attribute_value
    return {k: convert(v) for k, v in extra.items() if v is not None and v != "" and k}
