"""The data commands end to end on the shipped example files (SQLite in tmp_path)."""

from __future__ import annotations

from pathlib import Path

from cli_support import EXAMPLE, NOT_UTF8, TEN_MB, db_rows, run
from sqlalchemy import text


def test_import_example_then_audience(config_dir: Path) -> None:
    code, out, _ = run("contacts", "import", str(EXAMPLE / "contacts.csv"), "--config", str(config_dir))
    assert code == 0 and "300" in out
    code, out, _ = run("events", "import", str(EXAMPLE / "events.csv"), "--config", str(config_dir))
    assert code == 0
    code, out, err = run("audience", "mothers-day-2027", "--config", str(config_dir), "--at", "2027-05-06T00:00:00Z")
    assert code == 0, err
    assert "contacts in the segment" in out and "email" in out and "sms" in out and "no consent" in out
    code, out, _ = run("db", "upgrade", "--config", str(config_dir))
    assert code == 0 and "up to date" in out


def test_bad_rows_are_listed_and_exit_1_but_good_rows_kept(config_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("external_id,email\nok1,ok@example.com\nbad,not-an-email\n,x@example.com\n", encoding="utf-8")
    code, out, err = run("contacts", "import", str(path), "--config", str(config_dir))
    assert code == 1
    assert err.splitlines() == [
        f"{path}:3:2: email 'not-an-email' is not valid: An email address must have an @-sign.",
        f"{path}:4:1: external_id is required",
    ]
    code, out, err = run("contacts", "import", str(path), "--config", str(config_dir))
    assert code == 1 and "1" in out  # ok1 is now an update


def test_unknown_campaign_and_missing_file(config_dir: Path, tmp_path: Path) -> None:
    code, _, err = run("audience", "nope", "--config", str(config_dir))
    assert code == 2 and "campaign 'nope' not found" in err
    code, _, err = run("events", "import", str(tmp_path / "missing.csv"), "--config", str(config_dir))
    assert code == 2 and "no such file" in err


# ---------------------------------------------------------------- hostile input (issue 9)


def query(config_dir: Path, sql: str) -> list[tuple]:
    return [tuple(r) for r in db_rows(config_dir.parent / "var" / "topslot.db", text(sql))]


def names(config_dir: Path) -> list[tuple]:
    return query(config_dir, "SELECT external_id, first_name FROM contacts ORDER BY id")


def test_contacts_csv_bad_rows_cost_only_themselves(config_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(
        b"external_id,email,first_name\n"
        b"ok1,ok1@example.com,Ann\n"
        b"utf8,u@example.com,Zo\xeb\n"  # line 3: Latin-1, not UTF-8
        + "ok2,ok2@example.com,Zoë\n".encode()
        + b"big,big@example.com," + b"y" * TEN_MB + b"\n"  # line 5: a 10 MB field
        b"big2,big2@example.com,\"" + b"y" * 200_000 + b"\"\n"  # line 6: over the CSV field limit
        b"nul,n@example.com,a\x00b\n"  # line 7
        + "ok3,ok3@example.com,李\n".encode()
    )
    code, _, err = run("contacts", "import", str(path), "--config", str(config_dir))
    assert code == 1
    assert err.splitlines() == [
        f"{path}:3:1: {NOT_UTF8}",
        f"{path}:5:1: the line is longer than 1,048,576 characters",
        f"{path}:6:1: a field is longer than 131,072 characters",
        f"{path}:7:1: the line contains a NUL character",
    ]
    assert names(config_dir) == [
        ("ok1", "Ann"),
        ("ok2", "Zoë"),
        ("ok3", "李"),
    ]


def test_contacts_jsonl_bad_lines_cost_only_themselves(config_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "contacts.jsonl"
    path.write_bytes(
        b'{"external_id": "j1", "first_name": "Ann"}\n'
        + b"[" * 100_000 + b"]" * 100_000 + b"\n"  # line 2
        b'{"external_id": {"a": 1}}\n'  # line 3: today stored as the id "{'a': 1}"
        b'{"external_id": "j2", "attributes": {"score": NaN}}\n'
        b'{"external_id": "j3", "attributes": {"score": 1e309}}\n'
        b'{"external_id": "j4\\u0000"}\n'
        b'{"external_id": "j5", "first_name": "\xff"}\n'  # line 7: not UTF-8
        b'{"external_id": true}\n'
        b'{"external_id": "j6", "age": true}\n'
        b'{"external_id": "j7", "x": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}\n"  # line 10
        b'{"external_id": "j8", "first_name": "Bob", "attributes": {"score": 4.5}}\n'
    )
    code, _, err = run("contacts", "import", str(path), "--config", str(config_dir))
    assert code == 1
    assert err.splitlines() == [
        f"{path}:2:1: JSON nested more than 32 levels deep",
        f"{path}:3:1: external_id must be text, not a JSON object",
        f"{path}:4:1: not valid JSON: NaN is not a number",
        f"{path}:5:1: not valid JSON: the number 1e309 is out of range",
        f"{path}:6:1: a text value contains a NUL character (\\u0000)",
        f"{path}:7:1: {NOT_UTF8}",
        f"{path}:8:1: external_id must be text, not true/false",
        f"{path}:9:1: age must be a number, not true/false",
        f"{path}:10:1: JSON nested more than 32 levels deep",
    ]
    assert names(config_dir) == [("j1", "Ann"), ("j8", "Bob")]


CHINESE = "external_id,first_name,城市\n1,张伟,上海\n2,王芳,北京\n"


def test_contacts_in_gb18030_need_the_encoding_option(config_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(CHINESE.encode("gb18030"))
    code, out, err = run("contacts", "import", str(path), "--config", str(config_dir))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"{path}:1:1: the file is not UTF-8 (it looks like GB18030); re-run with --encoding gb18030"
    ]
    code, _, err = run("contacts", "import", str(path), "--encoding", "gb18030", "--config", str(config_dir))
    assert code == 0, err
    assert names(config_dir) == [("1", "张伟"), ("2", "王芳")]


def test_contacts_in_utf16_with_a_bom_are_read_without_the_option(config_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(CHINESE.replace("\n", "\r\n").encode("utf-16"))
    code, _, err = run("contacts", "import", str(path), "--config", str(config_dir))
    assert code == 0, err
    assert names(config_dir) == [("1", "张伟"), ("2", "王芳")]


def test_an_unknown_encoding_is_a_clear_error(config_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("external_id\n1\n", encoding="utf-8")
    for command in (["contacts", "import"], ["events", "import"]):
        code, _, err = run(*command, str(path), "--encoding", "klingon-8", "--config", str(config_dir))
        assert code == 2
        assert err.splitlines() == [
            "--encoding: unknown encoding 'klingon-8'; use a name such as utf-8, gb18030, utf-16 or cp1252"
        ]


def import_people(config_dir: Path, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text("external_id\nc1\nc2\n", encoding="utf-8")
    assert run("contacts", "import", str(people), "--config", str(config_dir))[0] == 0


def test_events_csv_bad_rows_cost_only_themselves(config_dir: Path, tmp_path: Path) -> None:
    import_people(config_dir, tmp_path)
    at = "2027-01-01T00:00:00Z"
    path = tmp_path / "events.csv"
    path.write_bytes(
        b"type,contact,order_id,sku,amount,currency,time,term\n"
        + f"purchase,c1,o1,s1,10.00,USD,{at},\n".encode()  # line 2
        + f"purchase,c1,o2,s1,inf,USD,{at},\n".encode()
        + f"purchase,c1,o3,s1,nan,USD,{at},\n".encode()
        + f"purchase,c1,o4,s1,1e309,USD,{at},\n".encode()  # line 5: stored as inf today
        + f"purchase,c1,o5,s1,1e30,USD,{at},\n".encode()
        + f"purchase,c1,o6,s1,-5,USD,{at},\n".encode()  # line 7
        + b"purchase,c1,o7,s\xff1,5,USD," + at.encode() + b",\n"  # line 8: not UTF-8
        + b"purchase,c1,o8," + b"s" * TEN_MB + b",5,USD," + at.encode() + b",\n"
        + b"purchase,c1,o9,s\x001,5,USD," + at.encode() + b",\n"  # line 10: NUL
        + f"purchase,c2,o10,s2,0.50,USD,{at},\n".encode()
        + f"search,c2,,,,,{at},口红\n".encode()  # line 12
    )
    code, _, err = run("events", "import", str(path), "--config", str(config_dir))
    assert code == 1
    assert err.splitlines() == [
        f"{path}:3:5: amount 'inf' is not a finite number",
        f"{path}:4:5: amount 'nan' is not a finite number",
        f"{path}:5:5: amount '1e309' is above the maximum of 999999999999.99",
        f"{path}:6:5: amount '1e30' is above the maximum of 999999999999.99",
        f"{path}:7:5: amount '-5' is negative: record refunds with `topslot conversions import` (refund=true)",
        f"{path}:8:1: {NOT_UTF8}",
        f"{path}:9:1: the line is longer than 1,048,576 characters",
        f"{path}:10:1: the line contains a NUL character",
    ]
    assert query(config_dir, "SELECT order_id, CAST(amount AS TEXT) FROM purchases ORDER BY id") == [
        ("o1", "10"),
        ("o10", "0.5"),
    ]
    assert query(config_dir, "SELECT term FROM searches") == [("口红",)]


def test_events_jsonl_bad_lines_cost_only_themselves(config_dir: Path, tmp_path: Path) -> None:
    import_people(config_dir, tmp_path)
    base = '"type": "purchase", "contact": "c1", "sku": "s1", "time": "2027-01-01T00:00:00Z"'
    path = tmp_path / "events.jsonl"
    path.write_text(
        f'{{{base}, "order_id": "o1", "amount": 10}}\n'
        f'{{{base}, "order_id": "o2", "amount": true}}\n'
        f'{{{base}, "order_id": {{"a": 1}}, "amount": 1}}\n'
        f'{{{base}, "order_id": "o4", "amount": [1]}}\n'
        f'{{{base}, "order_id": "o5", "amount": 1e309}}\n'
        f'{{{base}, "order_id": "o6", "amount": -Infinity}}\n'
        f'{{{base}, "order_id": "o7", "amount": {"[" * 100_000}\n'
        f'{{{base}, "order_id": "o8", "amount": 19.9}}\n',
        encoding="utf-8",
    )
    code, _, err = run("events", "import", str(path), "--config", str(config_dir))
    assert code == 1
    assert err.splitlines() == [
        f"{path}:2:1: amount must be a number, not true/false",
        f"{path}:3:1: order_id must be text, not a JSON object",
        f"{path}:4:1: amount must be a number, not a JSON array",
        f"{path}:5:1: not valid JSON: the number 1e309 is out of range",
        f"{path}:6:1: not valid JSON: -Infinity is not a number",
        f"{path}:7:1: JSON nested more than 32 levels deep",
    ]
    assert query(config_dir, "SELECT order_id, CAST(amount AS TEXT) FROM purchases ORDER BY id") == [
        ("o1", "10"),
        ("o8", "19.9"),
    ]


def test_events_in_gb18030_need_the_encoding_option(config_dir: Path, tmp_path: Path) -> None:
    import_people(config_dir, tmp_path)
    path = tmp_path / "events.csv"
    rows = "".join(f"search,c1,2027-01-0{i}T00:00:00Z,口红{i}\n" for i in range(1, 6))
    path.write_bytes(("type,contact,time,term\n" + rows).encode("gb18030"))
    code, _, err = run("events", "import", str(path), "--config", str(config_dir))
    assert code == 2
    assert err.splitlines() == [
        f"{path}:2:1: the file is not UTF-8 (it looks like GB18030); re-run with --encoding gb18030"
    ]
    code, _, err = run("events", "import", str(path), "--encoding", "GB18030", "--config", str(config_dir))
    assert code == 0, err
    assert query(config_dir, "SELECT term FROM searches ORDER BY id") == [(f"口红{i}",) for i in range(1, 6)]
