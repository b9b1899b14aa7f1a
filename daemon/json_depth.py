"""How deep a JSON text nests, measured without parsing it (so a 100,000-deep bomb costs no recursion).

Shared by every place that parses JSON from outside (imported JSON Lines, the conversions webhook):
check ``nesting_depth(text) <= limit`` first, then parse.
"""

from __future__ import annotations

import operator
import re
from itertools import accumulate, repeat

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash and the byte it escapes
_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone, a string has no quote inside
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # minus one below: +1 opens, -1 closes


def nesting_depth(text: str | bytes) -> int:
    """The most arrays and objects open at once in the JSON ``text``, valid JSON or not.

    Escapes, then strings, then every byte but brackets are dropped; the deepest running total of
    +1 per opening and -1 per closing bracket is the depth a JSON parser's recursion would reach.
    Linear, and done in C (``re``, ``translate``, ``accumulate``); UTF-8 never has ASCII bytes inside
    a multi-byte character, so working on bytes is exact.
    """
    body = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if body.count(b"[") + body.count(b"{") <= 1:
        return body.count(b"[") + body.count(b"{")
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(None, _NOT_BRACKET)
    steps = brackets.translate(_STEPS)
    return max(0, max(accumulate(map(operator.sub, steps, repeat(1))), default=0))
