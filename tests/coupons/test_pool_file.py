"""Reading pool files: plain lines or CSV, validation with line numbers."""

from __future__ import annotations

from topslot.coupons.pool_file import PoolLine, check_code, check_pool_name, read_pool_lines
from topslot.errors import Problem
from topslot.imports.limits import MAX_FIELD_CHARS
from topslot.imports.lines import BadLine


def read(text: str) -> list[PoolLine | Problem]:
    return list(read_pool_lines(text.splitlines(keepends=True), "f.txt"))


def test_plain_lines_skip_blanks_and_comments() -> None:
    items = read("# exported\nSAVE-10-A\n\n  SAVE-10-B  \r\n#x\nSAVE_10_C\n")
    assert items == [PoolLine(2, "SAVE-10-A"), PoolLine(4, "SAVE-10-B"), PoolLine(6, "SAVE_10_C")]


def test_csv_with_a_code_column() -> None:
    items = read("batch,Code,value\n1,AAA111,10\n2, BBB222 ,10\n\n3\n")
    assert items[:2] == [PoolLine(2, "AAA111"), PoolLine(3, "BBB222")]
    assert isinstance(items[2], Problem) and items[2].line == 5 and "no value" in items[2].message


def test_csv_with_semicolons_and_a_single_code_header() -> None:
    assert read("id;code\n1;XYZ123\n") == [PoolLine(2, "XYZ123")]
    assert read("code\nXYZ123\n") == [PoolLine(2, "XYZ123")]


def test_csv_without_code_column_is_one_problem() -> None:
    items = read("id,coupon\n1,AAA\n")
    assert len(items) == 1 and isinstance(items[0], Problem) and "'code' column" in items[0].message


def test_bad_codes_are_located() -> None:
    items = read("GOOD1\nno way\nAB\n" + "X" * 65 + "\n-LEAD\nOK-2\n")
    problems = [i for i in items if isinstance(i, Problem)]
    assert [p.line for p in problems] == [2, 3, 4, 5]
    assert "' '" in problems[0].message and "3-64 characters" in problems[1].message
    assert [i for i in items if isinstance(i, PoolLine)] == [PoolLine(1, "GOOD1"), PoolLine(6, "OK-2")]
    assert str(problems[0]).startswith("f.txt:2:1: ")


def test_names_and_codes() -> None:
    assert check_code("Summer-2027_x") is None and check_code("é123") is not None
    assert check_pool_name("spring-2027") is None
    assert check_pool_name("gen:spring") is not None and check_pool_name("") is not None


def test_bad_lines_from_the_reader_are_one_problem_each() -> None:
    lines = ["AAA111\n", BadLine("not valid UTF-8 text"), "CCC333\n", BadLine("contains a NUL character")]
    items = list(read_pool_lines(lines, "f.txt"))
    assert items == [
        PoolLine(1, "AAA111"),
        Problem("f.txt", 2, 1, "not valid UTF-8 text"),
        PoolLine(3, "CCC333"),
        Problem("f.txt", 4, 1, "contains a NUL character"),
    ]


def test_a_bad_first_line_does_not_decide_the_format() -> None:
    items = list(read_pool_lines([BadLine("not valid UTF-8 text"), "code,value\n", "AAA111,1\n"], "f.txt"))
    assert items == [Problem("f.txt", 1, 1, "not valid UTF-8 text"), PoolLine(3, "AAA111")]


def test_a_csv_field_over_the_field_limit_is_one_problem() -> None:
    items = read("code,note\nAAA111,x\nBBB222," + "y" * (MAX_FIELD_CHARS + 1) + "\nCCC333,z\n")
    assert items[0] == PoolLine(2, "AAA111") and items[2] == PoolLine(4, "CCC333")
    assert isinstance(items[1], Problem) and items[1].line == 3
    assert f"longer than {MAX_FIELD_CHARS:,} characters" in items[1].message


def test_a_long_code_is_not_echoed_whole() -> None:
    [problem] = read("X" * 100_000 + "\n")
    assert isinstance(problem, Problem) and "100000" in problem.message and len(problem.message) < 200


def test_a_nul_in_a_plain_line_is_one_problem() -> None:
    items = read("AAA111\nBB\x00B222\nCCC333\n")
    assert isinstance(items[1], Problem) and "NUL" in items[1].message and "\x00" not in items[1].message
    assert [i for i in items if isinstance(i, PoolLine)] == [PoolLine(1, "AAA111"), PoolLine(3, "CCC333")]
