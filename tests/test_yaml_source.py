"""The position-aware safe YAML loader."""

from __future__ import annotations

from pathlib import Path

from topslot.yaml_source import load_yaml, load_yaml_text


def load(text: str):
    return load_yaml_text(text, "c.yaml")


def test_positions_of_values_and_keys_are_one_based() -> None:
    doc = load("a: 1\nb:\n  - x\n  - {c: 'y'}\n")

    assert doc.data == {"a": 1, "b": ["x", {"c": "y"}]}
    assert doc.positions[("a",)] == (1, 4)
    assert doc.positions[("b", 0)] == (3, 5)
    assert doc.positions[("b", 1, "c")] == (4, 9)
    assert doc.key_positions[("b",)] == (2, 1)
    assert doc.key_positions[("b", 1, "c")] == (4, 6)
    assert doc.problems == []


def test_plain_text_is_kept_for_unquoted_scalars_only() -> None:
    doc = load('a: 07:30\nb: "x"\nc: plain\n')

    assert doc.plain_text[("a",)] == "07:30"
    assert ("b",) not in doc.plain_text
    assert doc.plain_text[("c",)] == "plain"


def test_sexagesimal_time_is_a_trap_with_the_fix() -> None:
    doc = load("slot: 7:30\n")

    assert doc.data == {"slot": 450}
    (problem,) = doc.problems
    assert (problem.line, problem.column) == (1, 7)
    assert problem.message == '`7:30` unquoted is read by YAML as the number 450; write "07:30"'
    assert ("slot",) in doc.traps


def test_quoted_time_is_not_a_trap() -> None:
    assert load('slot: "7:30"\n').problems == []


def test_leading_zero_integer_is_a_trap() -> None:
    doc = load("code: 0123\nok: 0\n")

    assert doc.data == {"code": 83, "ok": 0}
    (problem,) = doc.problems
    assert "octal number 83" in problem.message and '"0123"' in problem.message


def test_yaml11_booleans_other_than_true_false_are_traps() -> None:
    doc = load("a: yes\nb: NO\nc: Off\nd: true\ne: false\nf: y\n")

    assert doc.data == {"a": True, "b": False, "c": False, "d": True, "e": False, "f": "y"}
    assert [(p.line, p.column) for p in doc.problems] == [(1, 4), (2, 4), (3, 4)]
    assert "Norway" in doc.problems[1].message
    assert all("true or false" in p.message for p in doc.problems)


def test_trap_in_a_key_is_reported_at_the_key() -> None:
    doc = load("on: push\n")

    assert doc.data == {True: "push"}
    (problem,) = doc.problems
    assert (problem.line, problem.column) == (1, 1)
    assert (True,) in doc.key_traps


def test_duplicate_key_reports_the_second_and_names_the_first_line() -> None:
    doc = load("a: 1\nb:\n  x: 1\n  y: 2\n  x: 3\n")

    assert doc.data == {"a": 1, "b": {"x": 3, "y": 2}}
    (problem,) = doc.problems
    assert (problem.line, problem.column) == (5, 3)
    assert problem.message.startswith("duplicate key 'x' (first defined on line 3)")
    assert doc.positions[("b", "x")] == (5, 6)


def test_merge_keys_are_not_duplicates_and_explicit_keys_win() -> None:
    doc = load("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n")

    assert doc.problems == []
    assert doc.data["d"] == {"x": 1, "y": 3}
    assert doc.positions[("d", "y")] == (4, 6)


def test_python_tags_are_refused() -> None:
    doc = load('a: !!python/object/apply:os.system ["echo hi"]\nb: !!python/name:os.system\n')

    assert doc.data == {"a": None, "b": None}
    assert [p.line for p in doc.problems] == [1, 2]
    assert all("not allowed" in p.message for p in doc.problems)


def test_syntax_error_carries_its_mark() -> None:
    doc = load("a: [1, 2\nb: 3\n")

    assert doc.syntax_error
    (problem,) = doc.problems
    assert problem.line == 2 and problem.message.startswith("YAML syntax error:")
    assert "started at line 1" in problem.message


def test_several_documents_are_an_error() -> None:
    doc = load("a: 1\n---\nb: 2\n")

    assert doc.syntax_error
    assert doc.problems[0].line == 2


def test_empty_and_comment_only_files_are_empty() -> None:
    assert load("").empty
    assert load("# nothing here\n\n").empty


def test_impossible_date_is_reported_not_raised() -> None:
    doc = load("end: 2027-02-30\n")

    (problem,) = doc.problems
    assert "not a real date" in problem.message
    assert ("end",) in doc.traps


def test_file_that_is_not_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    file = tmp_path / "latin1.yaml"
    file.write_bytes("id: x\nname: caf\xe9\n".encode("latin-1"))

    doc = load_yaml(file)

    (problem,) = doc.problems
    assert (problem.path, problem.line, problem.column) == (str(file), 2, 10)
    assert "UTF-8" in problem.message


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    doc = load_yaml(tmp_path / "nope.yaml")

    assert doc.syntax_error and "cannot read" in doc.problems[0].message


def test_recursive_alias_is_reported() -> None:
    doc = load("a: &x [1, *x]\n")

    assert any("refers to itself" in p.message for p in doc.problems)


def test_get_walks_paths() -> None:
    doc = load("a: {b: [10, 20]}\n")

    assert doc.get(("a", "b", 1)) == 20
    assert doc.get(("a", "zz"), "dflt") == "dflt"


# ---------------------------------------------------------------- hostile files: everything is bounded


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """The billion laughs in YAML: nine levels of ten aliases stand for 10⁹ values."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_the_alias_without_expanding_it() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        doc = load(alias_bomb())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert doc.syntax_error and doc.data is None
    (problem,) = doc.problems
    # a3 is the first level past 100,000 values (10⁵ = a4 would be the exact limit)
    assert (problem.line, problem.column) == (5, 45)
    assert problem.message.startswith("the alias *a3 makes the file stand for more than 100,000 values")
    assert peak < 5 * 1024 * 1024  # nothing was expanded


def test_aliases_of_a_long_text_are_bounded_by_size() -> None:
    doc = load("a: &s " + "x" * 500_000 + "\nb: [" + ", ".join(["*s"] * 20) + "]\n")

    (problem,) = doc.problems
    assert problem.line == 2 and "the alias *s" in problem.message and "4 MiB of text" in problem.message


def test_honest_reuse_of_anchors_is_fine() -> None:
    text = "defaults: &d {a: 1, b: [1, 2, 3]}\n" + "".join(f"c{i}: {{<<: *d, n: {i}}}\n" for i in range(200))

    doc = load(text)

    assert doc.problems == []
    assert doc.data["c199"] == {"a": 1, "b": [1, 2, 3], "n": 199}


def test_deep_nesting_is_refused_with_its_position() -> None:
    doc = load("a: " + "[" * 70 + "]" * 70 + "\n")

    (problem,) = doc.problems
    assert (problem.line, problem.column) == (1, 67) and "nest more than 64 deep" in problem.message


def test_nesting_past_the_parsers_own_limit_is_a_syntax_error_not_a_crash() -> None:
    doc = load("a: " + "[" * 100_000 + "]" * 100_000 + "\n")

    assert doc.syntax_error and doc.problems[0].message.startswith("YAML syntax error")


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    from topslot.yaml_source import MAX_FILE_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))

    doc = load_yaml(big)

    (problem,) = doc.problems
    assert (problem.line, problem.column) == (1, 1) and "larger than 1024 KiB" in problem.message
