"""The one bounded JSON loader (imported JSON Lines, the conversions webhook) and its depth check."""

from __future__ import annotations

import pytest

from topslot import json_depth
from topslot.json_depth import BadJson, NotJson, TooDeep, exceeds_depth, loads_bounded, nesting_depth


def test_exceeds_depth_agrees_with_nesting_depth() -> None:
    for text in ("[]", "[[[]]]", '{"a": [{"b": "[[[[[[[["}]}', "[" * 5, "]]]", '["\\"[[['):
        for limit in range(0, 7):
            assert exceeds_depth(text, limit) == (nesting_depth(text) > limit), (text, limit)
            assert exceeds_depth(text.encode(), limit) == (nesting_depth(text) > limit)


def test_exceeds_depth_does_not_measure_a_line_with_few_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    def measured(text: str | bytes) -> int:
        raise AssertionError("measured")

    monkeypatch.setattr(json_depth, "nesting_depth", measured)
    assert not exceeds_depth('{"a": [1, 2, {"b": "x"}], "c": {}}', 4)  # 4 openings: cannot be deeper
    with pytest.raises(AssertionError, match="measured"):
        exceeds_depth('{"a": [1, 2, {"b": "x"}], "c": {}}', 3)


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("[" * 100_000, TooDeep, "JSON nested more than 32 levels deep"),
        ('{"a": ', NotJson, "not valid JSON: Expecting value (column 7)"),
        ('{"a": NaN}', BadJson, "not valid JSON: NaN is not a number"),
        ('{"a": -Infinity}', BadJson, "not valid JSON: -Infinity is not a number"),
        ('{"a": 1e999}', BadJson, "not valid JSON: the number 1e999 is out of range"),
        ('{"a": "x\\u0000"}', BadJson, "a text value contains a NUL character (\\u0000)"),
        ('{"a": ["\\ud800"]}', BadJson, "a text value contains an unpaired surrogate (\\ud800 to \\udfff)"),
        ('{"\\udfff": 1}', BadJson, "a text value contains an unpaired surrogate (\\ud800 to \\udfff)"),
        ('{"a": "\ud800"}', BadJson, "a text value contains an unpaired surrogate (\\ud800 to \\udfff)"),  # raw
    ],
)
def test_what_the_loader_refuses(text: str, kind: type[BadJson], message: str) -> None:
    with pytest.raises(kind) as caught:
        loads_bounded(text, max_depth=32)
    assert str(caught.value) == message


def test_limits_and_hooks_are_the_callers() -> None:
    assert loads_bounded('{"a": ["\\ud83d\\ude00", 1.5, 7]}', max_depth=2) == {"a": ["\U0001f600", 1.5, 7]}  # a pair
    with pytest.raises(TooDeep):
        loads_bounded('{"a": [1]}', max_depth=1)
    with pytest.raises(BadJson, match="longer than 3 characters"):
        loads_bounded('["abcd"]', max_depth=1, max_text_chars=3)
    with pytest.raises(BadJson, match="more than 5 digits"):
        loads_bounded("[123456]", max_depth=1, max_int_digits=5)
    assert loads_bounded("[1.10, 12345678901234567890123]", max_depth=1, parse_float=str, parse_int=str) == [
        "1.10",
        "12345678901234567890123",
    ]
