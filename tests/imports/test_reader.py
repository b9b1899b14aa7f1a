from __future__ import annotations

from pathlib import Path

from topslot.imports.reader import detect_format, normalise_key, read_records


def test_csv_records_carry_their_starting_line_even_across_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('External ID,Note\na,"two\nlines"\n\nb,plain\nc,x,extra\n', encoding="utf-8")
    records = list(read_records(path))
    assert [(r.line, r.fields, r.error) for r in records[:2]] == [
        (2, {"external_id": "a", "note": "two\nlines"}, None),
        (5, {"external_id": "b", "note": "plain"}, None),
    ]
    assert records[2].line == 6 and "3 fields but the header has 2" in (records[2].error or "")
    assert records[0].column("note") == 2 and not records[0].typed


def test_jsonl_records_are_typed_and_bad_lines_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.ndjson"
    path.write_text('{"external_id": "a", "Loyalty": 5}\n\n[1, 2]\n{oops\n', encoding="utf-8")
    records = list(read_records(path))
    assert records[0].line == 1 and records[0].fields == {"external_id": "a", "loyalty": 5} and records[0].typed
    assert records[1].line == 3 and records[1].error == "each line must be a JSON object"
    assert records[2].line == 4 and "not valid JSON" in (records[2].error or "")


def test_format_by_extension_or_sniffing(tmp_path: Path) -> None:
    sniffed_json = tmp_path / "export.txt"
    sniffed_json.write_text('  {"external_id": "a"}\n', encoding="utf-8")
    sniffed_csv = tmp_path / "export.dat"
    sniffed_csv.write_text("external_id\na\n", encoding="utf-8")
    assert detect_format(sniffed_json) == "jsonl"
    assert detect_format(sniffed_csv) == "csv"
    assert detect_format(tmp_path / "x.JSONL") == "jsonl"


def test_normalise_key() -> None:
    assert normalise_key(" First Name ") == "first_name"
    assert normalise_key("Consent-Email") == "consent_email"
