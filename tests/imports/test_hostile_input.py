"""Hostile input at the reading layer: each bad line is ONE record error, every other line is read.

Shared by ``contacts import``, ``events import`` and ``conversions import`` (``read_records``) and
``coupons import`` (``open_lines``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topslot.errors import InvalidInput
from topslot.imports.limits import MAX_FIELD_CHARS, MAX_JSON_DEPTH, MAX_LINE_CHARS
from topslot.imports.lines import BadLine, open_lines, resolve_encoding
from topslot.imports.reader import read_records

GOOD_CSV = b"external_id,name\n"
NOT_UTF8 = "the line is not valid UTF-8; if the file is in another encoding, re-run with --encoding NAME"
TEN_MB = 10 * 1024 * 1024


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def summary(path: Path, encoding: str | None = None) -> list[tuple[int, str | None, dict[str, object]]]:
    return [(r.line, r.error, r.fields) for r in read_records(path, encoding)]


def only_error(path: Path, line: int, encoding: str | None = None) -> str:
    """The one bad record's message; every other record must be clean."""
    records = list(read_records(path, encoding))
    bad = [r for r in records if r.error is not None]
    assert [r.line for r in bad] == [line], [(r.line, r.error) for r in bad]
    return bad[0].error or ""


# ---------------------------------------------------------------- invalid UTF-8


def test_a_csv_row_of_invalid_utf8_is_one_bad_record(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", GOOD_CSV + "a,Zoë\n".encode() + b"b,Zo\xeb\xff\n" + "c,李\n".encode())
    assert "not valid UTF-8" in only_error(path, 3)
    assert summary(path)[0] == (2, None, {"external_id": "a", "name": "Zoë"})
    assert summary(path)[2] == (4, None, {"external_id": "c", "name": "李"})


def test_a_jsonl_line_of_invalid_utf8_is_one_bad_record(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", b'{"external_id": "a"}\n{"external_id": "\xc3\x28"}\n{"external_id": "c"}\n')
    assert "--encoding" in only_error(path, 2)
    assert [r.fields for r in read_records(path) if not r.error] == [{"external_id": "a"}, {"external_id": "c"}]


# ---------------------------------------------------------------- huge fields and lines


def test_a_10_mb_csv_field_is_one_bad_record(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", GOOD_CSV + b"a,x\nb," + b"y" * TEN_MB + b"\nc,z\n")
    assert f"longer than {MAX_LINE_CHARS:,} characters" in only_error(path, 3)
    assert [r.fields["external_id"] for r in read_records(path) if not r.error] == ["a", "c"]


def test_a_quoted_10_mb_csv_field_over_many_lines_is_one_bad_record(tmp_path: Path) -> None:
    body = b"\n".join([b"y" * 1000] * (TEN_MB // 1000))
    path = write(tmp_path, "c.csv", GOOD_CSV + b'a,x\nb,"' + body + b'"\nc,z\n')
    records = list(read_records(path))
    bad = [r for r in records if r.error]
    assert len(bad) == 1 and bad[0].line == 3 and f"longer than {MAX_FIELD_CHARS:,} characters" in (bad[0].error or "")
    assert [r.fields["external_id"] for r in records if not r.error] == ["a", "c"]


def test_a_field_over_the_csv_field_limit_is_one_bad_record(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", GOOD_CSV + b"a,x\nb," + b"y" * (MAX_FIELD_CHARS + 1) + b"\nc,z\n")
    assert f"a field is longer than {MAX_FIELD_CHARS:,} characters" in only_error(path, 3)


def test_an_over_long_jsonl_line_is_one_bad_record(tmp_path: Path) -> None:
    big = json.dumps({"external_id": "b", "note": "y" * TEN_MB}).encode()
    path = write(tmp_path, "c.jsonl", b'{"external_id": "a"}\n' + big + b'\n{"external_id": "c"}\n')
    assert f"longer than {MAX_LINE_CHARS:,} characters" in only_error(path, 2)


def test_a_long_json_string_within_the_line_limit_obeys_the_field_limit(tmp_path: Path) -> None:
    line = json.dumps({"external_id": "b", "note": "y" * (MAX_FIELD_CHARS + 1)}).encode()
    path = write(tmp_path, "c.jsonl", b'{"external_id": "a"}\n' + line + b"\n")
    assert f"longer than {MAX_FIELD_CHARS:,} characters" in only_error(path, 2)


# ---------------------------------------------------------------- deep JSON


@pytest.mark.parametrize(
    "deep",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"external_id": "b", "x": ' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "}",
        '{"external_id": "b", "x": ' + "[" * 100_000,  # unbalanced as well
    ],
    ids=["arrays", "objects", "unbalanced"],
)
def test_json_nested_100000_deep_is_one_bad_record(tmp_path: Path, deep: str) -> None:
    path = write(tmp_path, "c.jsonl", f'{{"external_id": "a"}}\n{deep}\n{{"external_id": "c"}}\n'.encode())
    assert f"nested more than {MAX_JSON_DEPTH} levels" in only_error(path, 2)


def test_json_nested_within_the_limit_is_read(tmp_path: Path) -> None:
    value: object = "leaf"
    for _ in range(MAX_JSON_DEPTH - 1):
        value = {"a": value}
    path = write(tmp_path, "c.jsonl", json.dumps({"external_id": "a", "x": value, "s": "[[[[{{{{"}).encode() + b"\n")
    assert summary(path)[0][1] is None


# ---------------------------------------------------------------- NUL


def test_a_nul_byte_in_a_csv_field_is_one_bad_record(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", GOOD_CSV + b"a,x\nb,y\x00z\nc,z\n")
    assert "NUL" in only_error(path, 3)


def test_a_nul_in_a_jsonl_line_is_one_bad_record(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", b'{"external_id": "a"}\n{"external_id": "b\\u0000"}\n{"x\\u0000": "c"}\n')
    records = list(read_records(path))
    assert [(r.line, "NUL" in (r.error or "")) for r in records] == [(1, False), (2, True), (3, True)]


def test_an_unpaired_surrogate_escape_in_jsonl_is_one_bad_record(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", b'{"external_id": "a\\ud800"}\n{"external_id": "\\ud83d\\ude00"}\n')
    assert "surrogate" in only_error(path, 1)
    assert summary(path)[1] == (2, None, {"external_id": "\U0001f600"})


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e309", "-1e400", "1" * 50])
def test_json_numbers_out_of_range_are_one_bad_record(tmp_path: Path, number: str) -> None:
    path = write(tmp_path, "e.jsonl", f'{{"amount": 1}}\n{{"amount": {number}}}\n{{"amount": 2.5}}\n'.encode())
    message = only_error(path, 2)
    assert message.startswith("not valid JSON:") and number.lstrip("-")[:8] in message
    assert [r.fields for r in read_records(path) if not r.error] == [{"amount": 1}, {"amount": 2.5}]


# ---------------------------------------------------------------- encodings


CHINESE_CSV = "external_id,name,city,城市\n1,张伟,上海,\n2,王芳,北京,\n3,李娜,广州,\n"  # 城市: first line is GBK
EXPECTED = [(2, None, {"external_id": "1", "name": "张伟", "city": "上海"})]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom", "utf-32"])
def test_a_bom_picks_the_encoding(tmp_path: Path, encoding: str) -> None:
    text = "external_id,name\n1,张伟\n2,Zoë\n"
    if encoding.endswith("-bom"):
        codec = encoding.removesuffix("-bom")
        data = ("\ufeff" + text).encode(codec)
    else:
        data = text.encode(encoding)
    path = write(tmp_path, "c.csv", data)
    assert summary(path) == [
        (2, None, {"external_id": "1", "name": "张伟"}),
        (3, None, {"external_id": "2", "name": "Zoë"}),
    ]


def test_a_utf16_jsonl_file_with_a_bom_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", '{"external_id": "张"}\r\n{"external_id": "b"}\r\n'.encode("utf-16"))
    assert [r.fields for r in read_records(path)] == [{"external_id": "张"}, {"external_id": "b"}]


def test_a_gb18030_file_is_one_clear_error_naming_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, "contacts.csv", CHINESE_CSV.encode("gb18030"))
    with pytest.raises(InvalidInput) as caught:
        list(read_records(path))
    [problem] = caught.value.problems
    assert str(problem) == (
        f"{path}:1:1: the file is not UTF-8 (it looks like GB18030); re-run with --encoding gb18030"
    )
    with pytest.raises(InvalidInput):
        resolve_encoding(path, None)


def test_a_gbk_file_with_ascii_headers_is_detected_from_most_lines(tmp_path: Path) -> None:
    text = "external_id,name,city\n" + "".join(f"{i},张伟{i},上海\n" for i in range(20))
    path = write(tmp_path, "c.csv", text.encode("gbk"))
    with pytest.raises(InvalidInput) as caught:
        list(read_records(path))
    assert len(caught.value.problems) == 1 and "--encoding gb18030" in caught.value.problems[0].message


def test_with_the_encoding_option_a_gb18030_file_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", CHINESE_CSV.encode("gb18030"))
    assert summary(path, "gb18030")[:1] == EXPECTED
    assert summary(path, "GBK")[:1] == EXPECTED
    assert resolve_encoding(path, "GB18030") == "gb18030"


def test_an_explicit_utf8_reports_bad_lines_one_by_one(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", CHINESE_CSV.encode("gb18030"))
    [header] = list(read_records(path, "utf-8"))  # the header itself cannot be read: nothing else can
    assert (header.line, header.error) == (1, "the header row cannot be read: " + NOT_UTF8)
    rows = write(tmp_path, "d.csv", b"external_id,name\n" + "1,张伟\n2,王芳\n".encode("gb18030"))
    assert [r.line for r in read_records(rows, "utf-8") if r.error] == [2, 3]


def test_a_bom_less_utf16_file_is_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "external_id,name\n1,Ann\n2,Bob\n".encode("utf-16-le"))
    with pytest.raises(InvalidInput) as caught:
        list(read_records(path))
    assert "--encoding utf-16-le" in caught.value.problems[0].message
    assert summary(path, "utf-16-le")[0] == (2, None, {"external_id": "1", "name": "Ann"})


def test_an_unknown_encoding_name_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", b"external_id\n1\n")
    with pytest.raises(ValueError, match="unknown encoding 'klingon-8'"):
        resolve_encoding(path, "klingon-8")
    with pytest.raises(ValueError, match="unknown encoding"):
        list(read_records(path, "klingon-8"))
    with pytest.raises(ValueError, match="not a text encoding"):  # a codec that does not turn bytes into text
        resolve_encoding(path, "rot13")


def test_a_multibyte_character_cut_by_the_sniffing_window_is_not_an_error(tmp_path: Path) -> None:
    line = "1," + "张" * 30 + "\n"
    path = write(tmp_path, "c.csv", ("external_id,name\n" + line * 5000).encode())
    assert resolve_encoding(path, None) == "utf-8-sig"
    assert not [r for r in read_records(path) if r.error]


# ---------------------------------------------------------------- plain lines (coupon pools)


def test_open_lines_numbers_every_physical_line_and_flags_bad_ones(tmp_path: Path) -> None:
    data = b"AAA1\nBB\xffB\nCC\x00C\n" + b"D" * (MAX_LINE_CHARS + 5) + b"\nEEE5"
    path = write(tmp_path, "p.txt", data)
    with open_lines(path, None) as lines:
        items = list(lines)
    assert items[0] == "AAA1\n" and items[4] == "EEE5"
    assert [type(i) for i in items] == [str, BadLine, BadLine, BadLine, str]
    assert "UTF-8" in items[1].message and "NUL" in items[2].message and "longer" in items[3].message


def test_open_lines_strips_a_bom_whatever_the_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, "p.txt", "\ufeffAAA1\r\nBBB2\r\n".encode("utf-16-le"))
    with open_lines(path, "utf-16-le") as lines:
        assert list(lines) == ["AAA1\r\n", "BBB2\r\n"]


def test_a_long_run_of_nul_bytes_is_one_bad_record_not_utf16(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", GOOD_CSV + b"a,x\nb," + b"\x00" * 30_000 + b"\nc,z\n")
    assert "NUL" in only_error(path, 3)


PIECES = [b'"', b",", b"\n", b"\r", b"\x00", b"\xff", b"\xe4\xb8", b"a", b"{", b"[", b"}", b"]", b"\\u0000", b'"x":']
PIECES += [b"1e309", b"NaN"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=80), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_any_bytes_give_records_in_line_order_or_one_file_problem(
    tmp_path: Path, pieces: list[bytes], suffix: str
) -> None:
    path = write(tmp_path, "f" + suffix, b"a,b\n" + b"".join(pieces))
    try:
        lines = [r.line for r in read_records(path)]
    except InvalidInput as exc:
        assert len(exc.problems) == 1 and "--encoding" in exc.problems[0].message
        return
    assert lines == sorted(set(lines))
