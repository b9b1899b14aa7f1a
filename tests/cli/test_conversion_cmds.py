"""``topslot conversions import FILE`` end to end (SQLite in tmp_path, keys from the environment)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_support import NOT_UTF8, REPO, TEN_MB, db_rows, run
from sqlalchemy import select

from topslot.coupons.codes import GeneratedScheme
from topslot.coupons.keys import active_coupon_key
from topslot.links.keys import Keyring
from topslot.store.schema import conversions

SIGNING_KEY = "cli-test-signing-key-0123456789"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config" / "campaigns", config / "campaigns")
    (config / "topslot.yaml").write_text(
        f"database_url: sqlite+aiosqlite:///{tmp_path / 'var' / 'topslot.db'}\n"
        f"templates_dir: {REPO / 'templates'}\nvar_dir: {tmp_path / 'var'}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__MAIN", SIGNING_KEY)
    return config


def mom_code(contact_id: int) -> str:
    key = active_coupon_key(Keyring({"main": SIGNING_KEY.encode()}))
    return GeneratedScheme(key, "mothers-day-2027", "MOM", 10).code(contact_id)


def stored(tmp_path: Path) -> list[tuple]:
    query = select(
        conversions.c.order_id,
        conversions.c.refund,
        conversions.c.attributed_by,
        conversions.c.campaign_id,
        conversions.c.contact_id,
        conversions.c.source,
    ).order_by(conversions.c.id)
    return [tuple(r) for r in db_rows(tmp_path / "var" / "topslot.db", query)]


def test_import_keeps_good_rows_and_reports_every_bad_one(config: Path, tmp_path: Path) -> None:
    code = mom_code(1234)
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "Order ID,Occurred At,Revenue,Coupon Code,Refund,Currency\n"
        f"A1,2027-05-07T10:00:00+08:00,19.90,{code.lower()},no,USD\n"  # line 2: credited by its coupon
        "A2,2027-05-07T10:00:00+08:00,abc,,no,usd\n"  # line 3: revenue
        "A3,2027-05-07,5.00,,maybe,dollars\n"  # line 4: three problems
        "A4,2027-05-07T11:00:00Z,7.50,SUMMER10,,\n"  # line 5: fine, not credited
        f"A1,2027-05-09T10:00:00+08:00,19.90,,true,USD\n"  # line 6: a refund of A1
        "A4,2027-05-07T11:00:00Z,7.50,,,\n",  # line 7: a repeat of A4
        encoding="utf-8",
    )
    status, out, err = run("conversions", "import", str(csv), "--config", str(config))
    assert status == 1
    assert err.splitlines() == [
        f"{csv}:3:3: revenue is not a number (write e.g. 19.90, a dot for decimals)",
        f"{csv}:4:2: occurred_at has no UTC offset; add one such as +08:00 or Z",
        f"{csv}:4:5: refund must be true or false",
        f"{csv}:4:6: currency must be a 3-letter ISO 4217 code such as USD",
    ]
    assert "recorded" in out
    table_row = next(
        line for line in out.splitlines() if line.strip().startswith("│") and any(c.isdigit() for c in line)
    )
    assert [cell.strip() for cell in table_row.strip("│ ").split("│")] == ["3", "1", "2", "2", "0", "0", "1"]
    assert stored(tmp_path) == [
        ("A1", False, "coupon", "mothers-day-2027", 1234, "import"),
        ("A4", False, "none", None, None, "import"),
        ("A1", True, "coupon", "mothers-day-2027", 1234, "import"),
    ]
    # importing again records nothing new
    good = tmp_path / "good.jsonl"
    good.write_text('{"order_id": "A4", "occurred_at": "2027-05-07T11:00:00Z", "revenue": 7.5}\n', encoding="utf-8")
    status, out, err = run("conversions", "import", str(good), "--config", str(config))
    assert status == 0 and err == ""
    assert len(stored(tmp_path)) == 3


def test_missing_file(config: Path, tmp_path: Path) -> None:
    status, _, err = run("conversions", "import", str(tmp_path / "nope.csv"), "--config", str(config))
    assert status == 2 and "no such file" in err


# ---------------------------------------------------------------- hostile input (issue 9)

AT = "2027-05-07T10:00:00Z"


def test_csv_bad_rows_cost_only_themselves(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(
        b"order_id,occurred_at,revenue\n"
        + f"A1,{AT},19.90\n".encode()  # line 2
        + f"A2,{AT},inf\n".encode()
        + f"A3,{AT},nan\n".encode()
        + f"A4,{AT},1e309\n".encode()
        + f"A5,{AT},1e30\n".encode()  # line 6
        + f"A6,{AT},-5\n".encode()
        + b"A7\xff," + AT.encode() + b",5.00\n"  # line 8: not UTF-8
        + b"A8," + AT.encode() + b"," + b"9" * TEN_MB + b"\n"  # line 9: a 10 MB field
        + b"A\x009," + AT.encode() + b",5.00\n"  # line 10: NUL
        + f"A10,{AT},0.50\n".encode()
    )
    status, _, err = run("conversions", "import", str(path), "--config", str(config))
    assert status == 1
    assert err.splitlines() == [
        f"{path}:3:3: revenue is not a finite number",
        f"{path}:4:3: revenue is not a finite number",
        f"{path}:5:3: revenue is above 999999999999.99",
        f"{path}:6:3: revenue is above 999999999999.99",
        f"{path}:7:3: revenue is negative; send refunds as refund=true with positive amounts",
        f"{path}:8:1: {NOT_UTF8}",
        f"{path}:9:1: the line is longer than 1,048,576 characters",
        f"{path}:10:1: the line contains a NUL character",
    ]
    assert [row[0] for row in stored(tmp_path)] == ["A1", "A10"]


def test_jsonl_bad_lines_cost_only_themselves(config: Path, tmp_path: Path) -> None:
    base = f'"occurred_at": "{AT}"'
    path = tmp_path / "orders.jsonl"
    path.write_bytes(
        f'{{{base}, "order_id": "J1", "revenue": 19.9}}\n'.encode()
        + f'{{{base}, "order_id": {{"a": 1}}, "revenue": 1}}\n'.encode()  # line 2
        + f'{{{base}, "order_id": "J3", "revenue": true}}\n'.encode()
        + f'{{{base}, "order_id": "J4", "revenue": NaN}}\n'.encode()
        + f'{{{base}, "order_id": "J5", "revenue": 1e309}}\n'.encode()  # line 5
        + f'{{{base}, "order_id": "J6", "revenue": 1, "x": {"[" * 100_000 + "]" * 100_000}}}\n'.encode()
        + f'{{{base}, "order_id": "J7\\u0000", "revenue": 1}}\n'.encode()  # line 7
        + f'{{{base}, "order_id": "J8", "revenue": "1", "coupon": "\xff"}}\n'.encode("latin-1")
        + f'{{{base}, "order_id": "J9", "revenue": 2}}\n'.encode()  # line 9
    )
    status, _, err = run("conversions", "import", str(path), "--config", str(config))
    assert status == 1
    assert err.splitlines() == [
        f"{path}:2:1: order_id must be text",
        f"{path}:3:1: revenue must be a number such as 19.90",
        f"{path}:4:1: not valid JSON: NaN is not a number",
        f"{path}:5:1: not valid JSON: the number 1e309 is out of range",
        f"{path}:6:1: JSON nested more than 32 levels deep",
        f"{path}:7:1: a text value contains a NUL character (\\u0000)",
        f"{path}:8:1: {NOT_UTF8}",
    ]
    assert [row[0] for row in stored(tmp_path)] == ["J1", "J9"]


def test_encodings(config: Path, tmp_path: Path) -> None:
    text = "order_id,occurred_at,revenue,备注\n" + "".join(f"订单{i},{AT},1.00,好\n" for i in range(3))
    gbk = tmp_path / "orders.csv"
    gbk.write_bytes(text.encode("gb18030"))
    status, _, err = run("conversions", "import", str(gbk), "--config", str(config))
    assert status == 2
    assert err.splitlines() == [
        f"{gbk}:1:1: the file is not UTF-8 (it looks like GB18030); re-run with --encoding gb18030"
    ]
    status, _, err = run("conversions", "import", str(gbk), "--encoding", "gb18030", "--config", str(config))
    assert status == 0, err
    assert [row[0] for row in stored(tmp_path)] == ["订单0", "订单1", "订单2"]
    utf16 = tmp_path / "more.csv"
    utf16.write_bytes(text.replace("订单", "U").encode("utf-16"))
    status, _, err = run("conversions", "import", str(utf16), "--config", str(config))
    assert status == 0, err
    assert len(stored(tmp_path)) == 6
    status, _, err = run("conversions", "import", str(utf16), "--encoding", "nope", "--config", str(config))
    assert status == 2 and "--encoding: unknown encoding 'nope'" in err
