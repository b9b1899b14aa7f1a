"""``topslot coupons import | stock | verify`` end to end (SQLite in tmp_path, keys from the environment)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_support import NOT_UTF8, REPO, TEN_MB, db_rows, run
from sqlalchemy import insert, select

from topslot.coupons.codes import GeneratedScheme
from topslot.coupons.keys import active_coupon_key
from topslot.links.keys import Keyring
from topslot.store.db import IMMEDIATE, open_engine, upgrade
from topslot.store.schema import contacts, coupon_codes

SIGNING_KEY = "cli-test-signing-key-0123456789"
NOW = datetime(2027, 5, 6, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config" / "campaigns", config / "campaigns")
    shipped = (config / "campaigns" / "mothers-day-2027.yaml").read_text(encoding="utf-8")
    pooled = shipped.replace("id: mothers-day-2027", "id: fathers-day-2027").replace(
        "coupon: {generate: {prefix: MOM, length: 10}, on_exhausted: pause, expires: 2027-05-20}",
        "coupon: {pool: fathers-day, on_exhausted: skip}",
    )
    (config / "campaigns" / "fathers-day-2027.yaml").write_text(pooled, encoding="utf-8")
    (config / "topslot.yaml").write_text(
        f"database_url: sqlite+aiosqlite:///{tmp_path / 'var' / 'topslot.db'}\n"
        f"templates_dir: {REPO / 'templates'}\nvar_dir: {tmp_path / 'var'}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__MAIN", SIGNING_KEY)
    return config


def mom_code(contact_id: int, key: str = SIGNING_KEY) -> str:
    coupon_key = active_coupon_key(Keyring({"main": key.encode()}))
    return GeneratedScheme(coupon_key, "mothers-day-2027", "MOM", 10).code(contact_id)


def test_verify_a_generated_code_offline(config: Path) -> None:
    code = mom_code(1234)
    status, out, err = run("coupons", "verify", code, "--config", str(config))
    assert status == 0, err
    assert "campaign mothers-day-2027's code for contact 1234" in out
    assert not (config.parent / "var" / "topslot.db").exists()  # no database needed
    typed = code.lower()[:6] + "-" + code.lower()[6:]
    status, out, _ = run("coupons", "verify", typed, "--campaign", "mothers-day-2027", "--config", str(config))
    assert status == 0 and "contact 1234" in out


def test_verify_explains_why_a_code_is_invalid(config: Path) -> None:
    code = mom_code(1234)
    typo = code[:5] + ("X" if code[5] != "X" else "Y") + code[6:]
    status, out, err = run("coupons", "verify", typo, "--campaign", "mothers-day-2027", "--config", str(config))
    assert status == 1 and out == ""
    assert f"invalid: {typo}" in err and "mistyped" in err
    forged = mom_code(1234, key="some-other-key-nobody-configured")
    status, _, err = run("coupons", "verify", forged, "--campaign", "mothers-day-2027", "--config", str(config))
    assert status == 1 and "not_authentic" in err
    status, _, err = run("coupons", "verify", "X", "--campaign", "nope", "--config", str(config))
    assert status == 2 and "campaign 'nope' not found" in err


def test_import_stock_and_verify_a_pool_code(config: Path, tmp_path: Path) -> None:
    codes = tmp_path / "fathers.csv"
    codes.write_text("code,value\n" + "".join(f"DAD{i:04d},10\n" for i in range(20)) + "DAD0003,10\nbad code,1\n")
    status, out, err = run("coupons", "import", "fathers-day", str(codes), "--config", str(config))
    assert status == 1
    assert err.splitlines() == [
        f"{codes}:22:1: code 'DAD0003' repeats line 5",
        f"{codes}:23:1: code 'bad code' has ' ': use letters A-Z, digits, '-' and '_'"
        " (starting with a letter or digit)",
    ]
    assert "20" in out and "available" in out
    status, out, _ = run("coupons", "import", "fathers-day", str(codes), "--config", str(config))
    assert status == 1 and "already in pool" in out

    # hand out 19 of the 20 codes: 5 % left
    async def reserve() -> None:
        from topslot.config import load_campaigns
        from topslot.store.coupons import commit
        from topslot.store.coupons import reserve as reserve_codes

        campaign = load_campaigns(config / "campaigns", REPO / "templates").campaigns["fathers-day-2027"]
        engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'topslot.db'}")
        await upgrade(engine)
        async with engine.begin() as conn:
            rows = [{"id": i, "external_id": f"c{i}", "created_at": NOW, "updated_at": NOW} for i in range(1, 20)]
            await conn.execute(insert(contacts), rows)
        async with engine.execution_options(**IMMEDIATE).begin() as conn:
            got = await reserve_codes(conn, campaign, range(1, 20), NOW)
            await commit(conn, campaign.id, [1], NOW)
        await engine.dispose()
        assert len(got.codes) == 19

    asyncio.run(reserve())
    status, out, err = run("coupons", "stock", "fathers-day", "--config", str(config))
    assert status == 0 and "5.0 %" in out and "warning: pool fathers-day has 5.0 %" in err
    row = next(line for line in out.splitlines() if "5.0 %" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == ["1", "18", "1", "20", "5.0 %"]

    status, out, _ = run("coupons", "verify", "DAD0000", "--config", str(config))
    assert status == 0 and "pool fathers-day, campaign fathers-day-2027, contact 1 (sent)" in out
    status, out, _ = run("coupons", "verify", "DAD0001", "--campaign", "fathers-day-2027", "--config", str(config))
    assert status == 0 and "reserved, not yet sent" in out
    status, _, err = run("coupons", "verify", "DAD0019", "--campaign", "fathers-day-2027", "--config", str(config))
    assert status == 1 and "never handed out" in err
    status, _, err = run("coupons", "verify", "NOPE123", "--campaign", "fathers-day-2027", "--config", str(config))
    assert status == 1 and "not in pool fathers-day" in err


def test_stock_of_an_unknown_pool_and_bad_arguments(config: Path, tmp_path: Path) -> None:
    assert run("db", "upgrade", "--config", str(config))[0] == 0  # stock only reads: the database must exist
    status, _, err = run("coupons", "stock", "nothing", "--config", str(config))
    assert status == 1 and "no codes in pool 'nothing'" in err
    status, _, err = run("coupons", "import", "bad pool!", str(tmp_path), "--config", str(config))
    assert status == 2 and "pool name" in err
    status, _, err = run("coupons", "import", "p", str(tmp_path / "missing.txt"), "--config", str(config))
    assert status == 2 and "no such file" in err


# ---------------------------------------------------------------- hostile input (issue 9)


def pool_codes(tmp_path: Path, pool: str) -> list[str]:
    query = select(coupon_codes.c.code).where(coupon_codes.c.pool == pool).order_by(coupon_codes.c.id)
    return [r.code for r in db_rows(tmp_path / "var" / "topslot.db", query)]


def test_import_bad_lines_cost_only_themselves(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "codes.txt"
    path.write_bytes(
        b"AAA0001\n"
        b"BB\xffB0002\n"  # line 2: not UTF-8
        b"CCC\x000003\n"  # line 3: NUL
        + b"D" * TEN_MB + b"\n"  # line 4: 10 MB
        b"EEE0005\n"
    )
    status, _, err = run("coupons", "import", "spring", str(path), "--config", str(config))
    assert status == 1
    assert err.splitlines() == [
        f"{path}:2:1: {NOT_UTF8}",
        f"{path}:3:1: the line contains a NUL character",
        f"{path}:4:1: the line is longer than 1,048,576 characters",
    ]
    assert pool_codes(tmp_path, "spring") == ["AAA0001", "EEE0005"]


def test_import_csv_with_a_field_over_the_limit(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_bytes(b"code,note\nAAA0001,x\nBBB0002," + b"y" * 200_000 + b"\nCCC0003,z\n")
    status, _, err = run("coupons", "import", "spring", str(path), "--config", str(config))
    assert status == 1
    assert err.splitlines() == [f"{path}:3:1: a field is longer than 131,072 characters"]
    assert pool_codes(tmp_path, "spring") == ["AAA0001", "CCC0003"]


def test_import_encodings(config: Path, tmp_path: Path) -> None:
    gbk = tmp_path / "codes.txt"
    gbk.write_bytes("# 母亲节优惠码\nAAA0001\nAAA0002\n".encode("gb18030"))
    status, out, err = run("coupons", "import", "spring", str(gbk), "--config", str(config))
    assert status == 2 and out == ""
    assert err.splitlines() == [
        f"{gbk}:1:1: the file is not UTF-8 (it looks like GB18030); re-run with --encoding gb18030"
    ]
    status, _, err = run("coupons", "import", "spring", str(gbk), "--encoding", "gb18030", "--config", str(config))
    assert status == 0, err
    utf16 = tmp_path / "more.csv"
    utf16.write_bytes("code,备注\r\nBBB0001,好\r\n".encode("utf-16"))
    status, _, err = run("coupons", "import", "spring", str(utf16), "--config", str(config))
    assert status == 0, err
    assert pool_codes(tmp_path, "spring") == ["AAA0001", "AAA0002", "BBB0001"]
    status, _, err = run("coupons", "import", "spring", str(utf16), "--encoding", "x-nope", "--config", str(config))
    assert status == 2 and err.startswith("--encoding: unknown encoding 'x-nope'")
