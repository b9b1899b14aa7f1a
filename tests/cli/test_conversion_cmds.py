"""``topslot conversions import FILE`` end to end (SQLite in tmp_path, keys from the environment)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from cli_support import REPO, run
from sqlalchemy import select

from daemon.coupons.codes import GeneratedScheme
from daemon.coupons.keys import active_coupon_key
from daemon.links.keys import Keyring
from daemon.store.db import open_engine
from daemon.store.schema import conversions

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
    async def read() -> list[tuple]:
        engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'topslot.db'}")
        try:
            async with engine.connect() as conn:
                query = select(
                    conversions.c.order_id,
                    conversions.c.refund,
                    conversions.c.attributed_by,
                    conversions.c.campaign_id,
                    conversions.c.contact_id,
                    conversions.c.source,
                ).order_by(conversions.c.id)
                return [tuple(r) for r in await conn.execute(query)]
        finally:
            await engine.dispose()

    return asyncio.run(read())


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
