"""Turn pydantic validation errors into located problems written in plain marketer English."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from topslot.campaign import FieldError, condition_kind
from topslot.config.model_keys import allowed_keys, model_at
from topslot.errors import Problem
from topslot.yaml_source import YamlDocument, YamlPath

CONDITION_KEYS = ("attribute", "purchased", "searched", "tag", "any_tag", "consent", "all", "any", "not")

# Friendly text for fields constrained by a regular expression, keyed by the field's key.
_PATTERN_MESSAGES = {
    "id": "'{value}' is not a valid id: use lowercase letters, digits, '-' and '_' (at most 63, no spaces)",
    "prefix": "coupon prefix '{value}' must be uppercase letters and digits only (at most 12)",
    "url": "'{value}' is not a web address; it must start with https:// or http://",
    "currency": "'{value}' is not a three-letter currency code such as USD, EUR or CNY",
}

_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "decimal_type": "a number",
    "decimal_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list such as [a, b]",
    "tuple_type": "a list such as [a, b]",
    "set_type": "a list such as [a, b]",
    "dict_type": "a mapping (indented key: value lines)",
    "model_type": "a mapping (indented key: value lines)",
    "model_attributes_type": "a mapping (indented key: value lines)",
    "date_type": "a date written YYYY-MM-DD",
    "date_parsing": "a date written YYYY-MM-DD",
    "date_from_datetime_parsing": "a date written YYYY-MM-DD",
    "date_from_datetime_inexact": "a date written YYYY-MM-DD (without a time)",
}


@dataclass
class _Located:
    path: YamlPath  # where in the data the error is
    branch: YamlPath | None  # where a (non-discriminated) union was tried, if any
    label: str | None  # which union member this error came from
    error: dict[str, Any]


def describe(value: Any) -> str:
    """How a loaded YAML value reads to a marketer."""
    if value is None:
        return "nothing (the value is empty)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float | Decimal):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text '{value}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    return repr(value)


def label_of(path: YamlPath) -> str:
    """('audience', 'all', 0, 'equals') → 'audience.all[0].equals'."""
    text = ""
    for item in path:
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else str(item))
    return text


def validation_problems(
    exc: ValidationError, doc: YamlDocument, root: Any, *, conditions_at_top: bool = False
) -> list[Problem]:
    """Every error of ``exc`` located in ``doc``; errors caused by a YAML trap are left to the trap.

    ``root`` is what validated the data: a model class, or a type built of them such as
    ``dict[str, Condition]``. ``conditions_at_top``: the values of the top-level mapping are audience
    conditions (a segments file), as well as those under ``all``, ``any`` and ``not``."""
    located = [_locate(dict(err), doc.data, conditions_at_top) for err in exc.errors(include_url=False)]
    problems: list[Problem] = []
    for item in _pick_union_members(located):
        if _caused_by_trap(item, doc):
            continue
        problems.append(_problem(item, doc, root))
    return sorted(set(problems))


def _caused_by_trap(item: _Located, doc: YamlDocument) -> bool:
    for n in range(len(item.path), 0, -1):
        prefix = item.path[:n]
        if prefix in doc.traps or prefix in doc.key_traps:
            return True
    return False


def _locate(err: dict[str, Any], data: Any, conditions_at_top: bool = False) -> _Located:
    """Map pydantic's ``loc`` onto the data: drop union tags and member labels, which are not keys."""
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error") if err["type"] == "value_error" else None
    if isinstance(cause, FieldError):  # a model-level check that blames one of its fields
        loc = (*loc, *cause.loc)
    path: list[Any] = []
    branch: YamlPath | None = None
    label: str | None = None
    node = data
    tag_skipped_at = -1
    for index, item in enumerate(loc):
        if tag_skipped_at != len(path) and _is_condition_tag(path, node, item, conditions_at_top):
            tag_skipped_at = len(path)
            continue  # the discriminator's tag; the same word is also the condition's first key
        if isinstance(node, dict) and item in node:
            path.append(item)
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            path.append(item)
            node = node[item]
        elif index == len(loc) - 1 and err["type"] in ("missing", "extra_forbidden"):
            continue
        elif branch is None:
            branch, label = tuple(path), str(item)  # a union member's label, e.g. "literal['recipient']"
    return _Located(tuple(path), branch, label, err)


def _is_condition_tag(path: list[Any], node: Any, item: Any, conditions_at_top: bool = False) -> bool:
    """Is ``item`` the tag pydantic put in ``loc`` for the audience condition at ``path``?

    Conditions sit in the lists under ``all``/``any`` and under ``not`` (and, with ``conditions_at_top``,
    are the values of the top-level mapping); nothing else in a campaign uses those keys.
    """
    at_condition = bool(path) and (
        path[-1] == "not"
        or (isinstance(path[-1], int) and len(path) > 1 and path[-2] in ("all", "any"))
        or (conditions_at_top and len(path) == 1)
    )
    return at_condition and isinstance(node, dict) and condition_kind(node) == item


def _pick_union_members(located: list[_Located]) -> list[_Located]:
    """When a value matched no member of a union, keep the member that got furthest (or merge)."""
    plain = [item for item in located if item.branch is None]
    groups: dict[YamlPath, list[_Located]] = {}
    for item in located:
        if item.branch is not None:
            groups.setdefault(item.branch, []).append(item)
    for branch, items in groups.items():
        by_label: dict[str, list[_Located]] = {}
        for item in items:
            by_label.setdefault(item.label or "", []).append(item)
        depth = {label: max(len(i.path) for i in errs) for label, errs in by_label.items()}
        deepest = max(depth.values())
        leaders = [label for label in by_label if depth[label] == deepest]
        custom = [label for label in leaders if any(i.error["type"] == "value_error" for i in by_label[label])]
        if len(leaders) == 1 or custom:
            plain.extend(by_label[(custom or leaders)[0]])
            continue
        errors = [i.error for label in leaders for i in by_label[label]]
        plain.append(_Located(branch, None, None, _merged_union_error(errors)))
    return plain


def _merged_union_error(errors: list[dict[str, Any]]) -> dict[str, Any]:
    wanted: list[str] = []
    for err in errors:
        if err["type"] == "literal_error":
            wanted.append((err.get("ctx") or {}).get("expected", "a listed value"))
        elif err["type"] in _TYPE_WORDS:
            wanted.append(_TYPE_WORDS[err["type"]])
        else:
            wanted.append(err["msg"])
    unique = list(dict.fromkeys(wanted))
    expected = ", or ".join(unique)
    return {"type": "union_mismatch", "msg": f"expected {expected}", "input": errors[0].get("input"), "ctx": {}}


def _problem(item: _Located, doc: YamlDocument, root: Any) -> Problem:
    err, path = item.error, item.path
    kind = err["type"]
    value = doc.get(path)
    if kind == "missing":
        key = err["loc"][-1]
        where = label_of(path) or "the campaign"
        return doc.problem(_parent_position(doc, path), f"{where}: missing required key '{key}'")
    if kind == "extra_forbidden":
        key = path[-1]
        model = model_at(root, doc.data, path[:-1])
        message = f"unknown key '{key}'"
        if model is not None:
            message += _suggestion(str(key), allowed_keys(model))
        return doc.problem(doc.position_of(path, prefer_key=True), _prefixed(path[:-1], message))
    if kind == "unknown_condition":
        return _unknown_condition(doc, path, value)
    message = _friendly(err, value, path)
    return doc.problem(doc.position_of(path), _prefixed(path, message))


def _prefixed(path: YamlPath, message: str) -> str:
    label = label_of(path)
    return f"{label}: {message}" if label and not message.startswith(label) else message


def _parent_position(doc: YamlDocument, path: YamlPath) -> tuple[int, int]:
    if path in doc.key_positions:
        return doc.key_positions[path]
    return doc.positions.get(path, (1, 1))


def _suggestion(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; allowed here: {', '.join(allowed)}"


def _unknown_condition(doc: YamlDocument, path: YamlPath, value: Any) -> Problem:
    allowed = ", ".join(CONDITION_KEYS)
    if isinstance(value, dict) and value:
        key = next(iter(value))
        message = f"unknown condition '{key}'"
        close = difflib.get_close_matches(str(key), CONDITION_KEYS, n=1, cutoff=0.6)
        message += f"; did you mean '{close[0]}'?" if close else f"; a condition starts with one of: {allowed}"
        return doc.problem(doc.position_of((*path, key), prefer_key=True), _prefixed(path, message))
    return doc.problem(
        doc.position_of(path),
        _prefixed(path, f"a condition is a mapping that starts with one of: {allowed}; found {describe(value)}"),
    )


def _friendly(err: dict[str, Any], value: Any, path: YamlPath) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    key = next((p for p in reversed(path) if isinstance(p, str)), "")
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in _TYPE_WORDS:
        hint = "; put it in quotes" if kind == "string_type" and isinstance(value, int | float | date) else ""
        return f"expected {_TYPE_WORDS[kind]}, found {describe(value)}{hint}"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        if key in ("channels", "consent"):
            return f"unknown channel '{value}'; choose {expected}"
        if key == "days":
            return f"'{value}' is not a weekday; use {expected}"
        return f"'{value}' is not allowed here; choose {expected}"
    if kind == "string_pattern_mismatch":
        template = _PATTERN_MESSAGES.get(key)
        if template:
            return template.format(value=value)
        return f"'{value}' has the wrong form (it must match {ctx.get('pattern')})"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"is too long (at most {ctx.get('max_length')} characters)"
    if kind == "too_short":
        if key == "between":
            return "between needs two values: [low, high]"
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        if key == "between":
            return "between needs exactly two values: [low, high]"
        return f"has too many items (at most {ctx.get('max_length')})"
    bounds = {
        "greater_than": ("more than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    if kind in bounds:
        words, name = bounds[kind]
        return f"must be {words} {ctx.get(name)}, found {value}"
    if kind == "union_mismatch":
        return f"{err['msg']}; found {describe(value)}"
    return str(err["msg"])
