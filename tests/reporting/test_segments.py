"""Named report segments: validated from YAML, every problem located, ``other`` reserved."""

from __future__ import annotations

from pathlib import Path

import pytest

from topslot.errors import InvalidInput
from topslot.reporting.segments import load_segments, parse_segments


def test_parse_keeps_file_order() -> None:
    named = parse_segments({"b": {"tag": "vip"}, "a": {"attribute": "age", "lt": 30}})
    assert [name for name, _ in named] == ["b", "a"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "maps segment names to conditions"),
        ({}, "maps segment names to conditions"),
        ({"other": {"tag": "x"}}, "'other' is reserved"),
        ({"x": {"nonsense": 1}}, "x: unknown condition 'nonsense'; did you mean 'consent'?"),  # as in campaigns
    ],
)
def test_bad_segments(data: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_segments(data, "s.yaml")
    assert message in str(info.value.problems[0])


def test_load_reports_yaml_position(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("a: {tag: x}\nb: [unclosed\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        load_segments(path)
    assert str(info.value.problems[0]).startswith(f"{path}:3:")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_segments(tmp_path / "missing.yaml")


def test_load_locates_every_problem_in_the_file(tmp_path: Path) -> None:
    """Read like a campaign file: each problem at its own line and column, YAML traps and duplicates too."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "young: {attribute: age, lt: 30}\n"
        "NO: {tag: norway}\n"
        "vip:\n"
        "  tag: 7\n"
        "other: {tag: z}\n"
        "young: {attribute: age, lt: 25}\n"
        "buyers: {purchased: {category: x, within_dayz: 3}}\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidInput) as info:
        load_segments(path)
    assert [str(p).removeprefix(f"{path}:") for p in info.value.problems] == [
        '2:1: `NO` unquoted is read by YAML as the boolean false; write true or false for a yes/no setting, '
        'or quote it ("NO") if you meant text (e.g. the country code of Norway)',
        "4:8: vip.tag: expected text, found the number 7; put it in quotes",
        "5:1: 'other' is reserved for contacts in no segment",
        "6:1: duplicate key 'young' (first defined on line 1); keep only one",
        "7:35: buyers.purchased: unknown key 'within_dayz'; did you mean 'within_days'?",
    ]


def test_a_deeply_nested_file_is_one_problem_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("deep: " + "[" * 10_000 + "]" * 10_000 + "\n")  # the old reader: RecursionError
    with pytest.raises(InvalidInput) as info:
        load_segments(path)
    (problem,) = info.value.problems
    assert problem.line == 1 and "nesting depth" in problem.message
    path.write_text("a: {tag: x}\nnested: " + "{all: [" * 40 + "{tag: x}" + "]}" * 40 + "\n")
    with pytest.raises(InvalidInput) as info:
        load_segments(path)
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (2, 232) and "nest more than 64 deep" in problem.message


def test_load_bounds_the_file_like_campaign_files(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"a: {tag: x}\n" + b"#" * (1024 * 1024))
    with pytest.raises(InvalidInput, match="larger than 1024 KiB"):
        load_segments(path)
    path.write_bytes("a: {tag: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match="not UTF-8"):
        load_segments(path)
