"""Named report segments: validated from YAML, every problem located, ``other`` reserved."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import InvalidInput
from daemon.reporting.segments import load_segments, parse_segments


def test_parse_keeps_file_order() -> None:
    named = parse_segments({"b": {"tag": "vip"}, "a": {"attribute": "age", "lt": 30}})
    assert [name for name, _ in named] == ["b", "a"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "maps segment names to conditions"),
        ({}, "maps segment names to conditions"),
        ({"other": {"tag": "x"}}, "'other' is reserved"),
        ({"x": {"nonsense": 1}}, "x: a condition needs one of"),
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
