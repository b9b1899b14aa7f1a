"""``topslot report`` in every format against the seeded database (``tests/reporting/seed.py``),
with the campaign loaded from a YAML file (costs email 0.10, sms 0.50, margin 40 %) and without."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sys
from pathlib import Path

import pytest
from cli_support import REPO, run

sys.path.insert(0, str(REPO / "tests"))
from reporting.seed import seed  # noqa: E402

from topslot.settings import load_settings  # noqa: E402
from topslot.store.db import open_engine, upgrade  # noqa: E402


@pytest.fixture
def seeded(config_dir: Path) -> Path:
    source = (config_dir / "campaigns" / "mothers-day-2027.yaml").read_text(encoding="utf-8")
    spring = re.sub(r"(?m)^id: .*$", "id: spring", source)
    spring = re.sub(r"(?m)^costs: .*$", "costs: {email: 0.10, sms: 0.50, margin: 0.40, currency: USD}", spring)
    (config_dir / "campaigns" / "spring.yaml").write_text(spring, encoding="utf-8")

    async def work() -> None:
        engine = open_engine(load_settings(config_dir).database_url)
        try:
            await upgrade(engine)
            await seed(engine)
        finally:
            await engine.dispose()

    asyncio.run(work())
    return config_dir


def test_json(seeded: Path) -> None:
    code, out, err = run("report", "spring", "--format", "json", "--config", str(seeded))
    assert code == 0, err
    data = json.loads(out)
    assert data["campaign_name"] == "Mother's Day — cosmetics"  # the loaded file's name
    # (gross profit 61 − promotion cost 16) / 16; promotion cost = discount 15 + send 1
    assert data["total"]["roi"] == "2.8125" and data["total"]["lift"] == "0.3333" and data["notes"] == []
    assert data["holdout_window"]["start"] == "2027-05-05T10:00:00+00:00"  # 2027-05-06 00:00 at UTC+14


def test_csv_by_slot(seeded: Path) -> None:
    code, out, _ = run("report", "spring", "--by", "slot", "--format", "csv", "--config", str(seeded))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["group"], r["planned"], r["revenue"]) for r in rows] == [
        ("07:30", "6", "130.00"), ("17:00", "5", "50.00"), ("total", "11", "180.00")
    ]  # fmt: skip


def test_table(seeded: Path) -> None:
    code, out, _ = run("report", "spring", "--config", str(seeded))
    assert code == 0
    assert "Mother's Day — cosmetics (spring) by channel" in out and "140.00" in out
    assert "132.3%" in out  # email ROI: (36 − 15.50) / 15.50


def test_table_fits_an_80_column_terminal(seeded: Path, tmp_path: Path) -> None:
    segments = tmp_path / "segments.yaml"
    conditions = ["{tag: vip}", "{attribute: country, equals: US}", "{attribute: country, equals: CN}",
                  "{attribute: country, equals: DE}"]  # fmt: skip
    segments.write_text("".join(f"customers of segment number {i} who bought in spring: {c}\n"
                                for i, c in enumerate(conditions)), encoding="utf-8")  # fmt: skip
    code, out, _ = run("report", "spring", "--by", "segment", "--segments", str(segments), "--config", str(seeded))
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80  # not a tty: 80 columns
    assert "Sales and ROI (1/" in out and "140.00" in out
    target = tmp_path / "table.txt"
    assert run("report", "spring", "--by", "segment", "--segments", str(segments), "-o", str(target),
               "--config", str(seeded))[0] == 0  # fmt: skip
    assert max(len(line) for line in target.read_text(encoding="utf-8").splitlines()) <= 100


def test_html_to_a_file(seeded: Path, tmp_path: Path) -> None:
    target = tmp_path / "spring.html"
    code, out, err = run("report", "spring", "--format", "html", "-o", str(target), "--config", str(seeded))
    assert code == 0 and out == "" and f"wrote {target}" in err
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count('class="chart histogram"') == 2


def test_named_segments_file(seeded: Path, tmp_path: Path) -> None:
    segments = tmp_path / "segments.yaml"
    segments.write_text("china: {attribute: country, equals: CN}\nvip: {tag: vip}\n", encoding="utf-8")
    args = ("report", "spring", "--by", "segment", "--segments", str(segments), "--format", "json")
    code, out, _ = run(*args, "--config", str(seeded))
    groups = {g["group"]: g["planned"] for g in json.loads(out)["groups"]}
    assert code == 0 and groups == {"china": 3, "vip": 2, "other": 6}
    segments.write_text("china: {attribute: country, shouts: CN}\n", encoding="utf-8")
    code, _, err = run(*args, "--config", str(seeded))
    assert code == 2 and f"{segments}:1:29: china: unknown key 'shouts'" in err  # at the key, not at 1:1


def test_campaign_file_gone_uses_the_ledger(seeded: Path) -> None:
    (seeded / "campaigns" / "spring.yaml").unlink()
    code, out, _ = run("report", "spring", "--format", "json", "--config", str(seeded))
    data = json.loads(out)
    assert code == 0 and data["campaign_name"] == 'Spring <sale> & "friends"'
    assert data["total"]["send_cost"] == "0.00" and data["total"]["roi"] is None and data["notes"]


def test_bad_input(seeded: Path) -> None:
    assert run("report", "spring", "--by", "country", "--config", str(seeded))[0] == 2
    assert run("report", "spring", "--format", "pdf", "--config", str(seeded))[0] == 2
    code, _, err = run("report", "spring", "--segments", "x.yaml", "--config", str(seeded))
    assert code == 2 and "--segments only applies with --by segment" in err
    code, _, err = run("report", "nope", "--config", str(seeded))
    assert code == 1 and "'nope' is neither loaded" in err


def test_an_output_file_that_cannot_be_written_is_one_line(seeded: Path, tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "spring.csv"
    code, out, err = run("report", "spring", "--format", "csv", "-o", str(target), "--config", str(seeded))
    assert (code, out) == (1, "")
    assert err == f"--output: cannot write {target}: No such file or directory\n"
