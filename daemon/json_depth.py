"""JSON from outside, bounded: how deep it nests (measured without parsing it, so a 100,000-deep
bomb costs no recursion), and one loader that refuses what would poison what is done with it.

Every place that parses JSON it did not write uses ``loads_bounded`` (imported JSON Lines, the
conversions webhook), or at least ``exceeds_depth`` before parsing (provider callbacks).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from itertools import accumulate, repeat
from typing import Any

MAX_JSON_DEPTH = 32
"""Arrays / objects nested in one imported JSON Lines record or one conversion webhook body (a batch needs 3)."""

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash and the byte it escapes
_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone, a string has no quote inside
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # minus one below: +1 opens, -1 closes
_SURROGATE = re.compile("[\ud800-\udfff]")


def nesting_depth(text: str | bytes) -> int:
    """The most arrays and objects open at once in the JSON ``text``, valid JSON or not.

    Escapes, then strings, then every byte but brackets are dropped; the deepest running total of
    +1 per opening and -1 per closing bracket is the depth a JSON parser's recursion would reach.
    Linear, and done in C (``re``, ``translate``, ``accumulate``); UTF-8 never has ASCII bytes inside
    a multi-byte character, so working on bytes is exact.
    """
    body = _bytes(text)
    openings = body.count(b"[") + body.count(b"{")
    if openings <= 1:
        return openings
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(None, _NOT_BRACKET)
    steps = brackets.translate(_STEPS)
    return max(0, max(accumulate(map(operator.sub, steps, repeat(1))), default=0))


def exceeds_depth(text: str | bytes, limit: int) -> bool:
    """Whether ``text`` nests deeper than ``limit``; False at once when it has no more than ``limit``
    opening brackets at all (every ordinary line), else measured by ``nesting_depth``."""
    if isinstance(text, str):
        openings = text.count("[") + text.count("{")
    else:
        openings = text.count(b"[") + text.count(b"{")
    return openings > limit and nesting_depth(text) > limit


def _bytes(text: str | bytes) -> bytes:
    return text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text


class BadJson(ValueError):
    """A JSON text refused by ``loads_bounded``: its message is for the text's author and never
    holds a text value of it. ``TooDeep`` and ``NotJson`` say why more precisely; the others hold
    a value topslot does not take (NaN, a NUL, an unpaired surrogate, a number or text too long)."""


class TooDeep(BadJson):
    """Nested deeper than the limit (found before parsing)."""


class NotJson(BadJson):
    """Not JSON at all (a syntax error)."""


def finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused (``ValueError``) beyond a float's range."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def loads_bounded(
    text: str,
    *,
    max_depth: int,
    max_text_chars: int | None = None,
    max_int_digits: int | None = None,
    parse_float: Callable[[str], Any] = finite_float,
    parse_int: Callable[[str], Any] = int,
) -> Any:
    """One JSON value from ``text``, or ``BadJson`` with a message for its author.

    Refused: nesting deeper than ``max_depth`` (``TooDeep``, checked before parsing, so a 100,000
    deep text costs neither recursion nor time); text that is not JSON (``NotJson``); NaN and
    ±Infinity; what ``parse_float`` / ``parse_int`` refuse with ``ValueError`` (by default numbers
    beyond a float's range); integers of more than ``max_int_digits`` digits (``int()`` is quadratic);
    text values and keys with a NUL, an unpaired surrogate or more than ``max_text_chars`` characters
    (no database stores the first two; PostgreSQL refuses them at insert).
    """
    if exceeds_depth(text, max_depth):
        raise TooDeep(f"JSON nested more than {max_depth} levels deep")
    if max_int_digits is not None:
        parse_int = _digits_at_most(max_int_digits, parse_int)
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=parse_float, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        raise NotJson(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:  # a backstop only: the depth was checked
        raise TooDeep(f"JSON nested more than {max_depth} levels deep") from None
    except ValueError as exc:  # from the parse_* hooks
        raise BadJson(f"not valid JSON: {exc}") from None
    # Only a \u escape can make a NUL or an unpaired surrogate in parsed text (raw control
    # characters are not JSON); a surrogate already in ``text`` ends up there as it is.
    too_long = max_text_chars is not None and len(text) > max_text_chars
    if "\\u" in text or too_long or _SURROGATE.search(text):
        problem = _text_problem(value, max_text_chars)
        if problem:
            raise BadJson(problem)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _digits_at_most(limit: int, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_int(text: str) -> Any:
        if len(text.lstrip("-")) > limit:
            raise ValueError(f"the number {text[:20]}... has more than {limit} digits")
        return parse(text)

    return parse_int


def _text_problem(value: Any, max_chars: int | None) -> str | None:
    """What is wrong with a text value (or key) anywhere in a parsed JSON value, or None."""
    if isinstance(value, str):
        if max_chars is not None and len(value) > max_chars:
            return f"a JSON text value is longer than {max_chars:,} characters"
        if "\x00" in value:
            return "a text value contains a NUL character (\\u0000)"
        if _SURROGATE.search(value):
            return "a text value contains an unpaired surrogate (\\ud800 to \\udfff)"
        return None
    if isinstance(value, dict):
        pairs = value.items()
        return next((p for k, v in pairs if (p := _text_problem(k, max_chars) or _text_problem(v, max_chars))), None)
    if isinstance(value, list):
        return next((p for v in value if (p := _text_problem(v, max_chars))), None)
    return None
