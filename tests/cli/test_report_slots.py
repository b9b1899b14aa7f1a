"""``topslot report`` and its slot comparison in every format, against a seeded ledger
(``tests/reporting/slot_seed.py``) on SQLite and, with TOPSLOT_TEST_DATABASE_URL, on a PostgreSQL
database of its own. Every expected number is worked out from the seed's rows and
``topslot.reporting.stats`` (itself tested against published values), never written in."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import REPO, run
from sqlalchemy import text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(REPO / "tests"))
from reporting.slot_seed import CAMPAIGN, CAMPAIGNS, SECOND, Expected, expected_counts, seed_slots  # noqa: E402

from topslot.reporting.slots import MIN_RECIPIENTS  # noqa: E402
from topslot.reporting.stats import Interval, mean_interval, newcombe, welch, wilson  # noqa: E402
from topslot.settings import load_settings  # noqa: E402
from topslot.store.db import open_engine, upgrade  # noqa: E402


def _with_database(config_dir: Path, url: str) -> None:
    path = config_dir / "topslot.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([f"database_url: {url}", *lines[1:]]) + "\n", encoding="utf-8")


async def _admin(url: str, statement: str) -> None:
    engine = open_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def slot_config(request: pytest.FixtureRequest, config_dir: Path) -> Iterator[Path]:
    source = (config_dir / "campaigns" / "mothers-day-2027.yaml").read_text(encoding="utf-8")
    campaign = re.sub(r"(?m)^id: .*$", f"id: {CAMPAIGN}", source)
    campaign = re.sub(r"(?m)^costs: .*$", "costs: {email: 0.10, sms: 0.50, margin: 0.40, currency: USD}", campaign)
    assert re.search(r"(?m)^slot_choice: split$", campaign)  # the example campaign splits its recipients
    (config_dir / "campaigns" / f"{CAMPAIGN}.yaml").write_text(campaign, encoding="utf-8")
    database = None
    if request.param == "postgresql":
        url = os.environ.get("TOPSLOT_TEST_DATABASE_URL")
        if not url:
            pytest.skip("TOPSLOT_TEST_DATABASE_URL not set")
        database = f"topslot_slots_{uuid.uuid4().hex[:12]}"  # generated here, not input
        asyncio.run(_admin(url, f'CREATE DATABASE "{database}"'))
        _with_database(config_dir, make_url(url).set(database=database).render_as_string(hide_password=False))

    async def prepare() -> None:
        engine = open_engine(load_settings(config_dir).database_url)
        try:
            await upgrade(engine)
            await seed_slots(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(prepare())
        yield config_dir
    finally:
        if database is not None:
            asyncio.run(_admin(os.environ["TOPSLOT_TEST_DATABASE_URL"], f'DROP DATABASE IF EXISTS "{database}"'))


def _moments(e: Expected) -> tuple[int, float, float]:
    return e.recipients, float(e.net), float(sum(x * x for x in e.nets))


def _rounded(interval: Interval | None) -> dict[str, float] | None:
    if interval is None:
        return None
    return {k: round(getattr(interval, k), 6) + 0.0 for k in ("estimate", "low", "high")}


def _expected_figures(e: Expected) -> dict[str, Interval | None]:
    return {
        "open_rate": wilson(e.opened, e.open_recipients),
        "click_rate": wilson(e.clicked, e.recipients),
        "conversion_rate": wilson(e.converted, e.recipients),
        "revenue_per_recipient": mean_interval(*_moments(e)),
    }


def _expected_click_verdict() -> str:
    expected = expected_counts()
    a, b = expected[("randomised", "17:00")], expected[("randomised", "07:30")]
    d = newcombe(a.clicked, a.recipients, b.clicked, b.recipients)
    assert d is not None and d.low > 0  # the seed makes 17:00 clearly better on clicks
    points, low, high = (f"{v * 100:.1f}" for v in (d.estimate, d.low, d.high))
    return f"17:00 beats 07:30 on clicks by {points} points (95 % CI {low}–{high})"


def test_json_slot_comparison(slot_config: Path) -> None:
    code, out, err = run("report", CAMPAIGN, "--format", "json", "--config", str(slot_config))
    assert code == 0, err
    comparison = json.loads(out)["slot_comparison"]
    assert (comparison["slot_choice"], comparison["currency"], comparison["summary"]) == ("split", "USD", None)
    assert (comparison["confidence"], comparison["min_recipients"]) == (0.95, MIN_RECIPIENTS)
    expected = expected_counts()
    seen = []
    for group in comparison["evidence"]:
        for s in group["slots"]:
            e = expected[(group["evidence"], s["slot"])]
            seen.append((group["evidence"], s["slot"]))
            assert (s["recipients"], s["open_recipients"], s["opened"], s["clicked"], s["converted"]) == (
                e.recipients, e.open_recipients, e.opened, e.clicked, e.converted
            )  # fmt: skip
            assert s["net_revenue"] == float(e.net)
            for key, interval in _expected_figures(e).items():
                assert s[key] == pytest.approx(_rounded(interval)), key
    assert seen == list(expected)  # randomised first, then observational; slots in order
    randomised, observational = comparison["evidence"]
    assert (randomised["label"], randomised["caveat"]) == ("randomised (causal)", None)
    assert observational["label"] == "observational" and "not assigned at random" in observational["caveat"]
    diffs = {d["metric"]: d for d in randomised["differences"]}
    assert diffs["click_rate"]["verdict"] == _expected_click_verdict() and diffs["click_rate"]["outcome"] == "better"
    morning, evening = expected[("randomised", "07:30")], expected[("randomised", "17:00")]
    revenue = welch(*_moments(evening), *_moments(morning))
    assert diffs["revenue_per_recipient"]["leader"] == "17:00"
    assert (diffs["revenue_per_recipient"]["low"], diffs["revenue_per_recipient"]["high"]) == pytest.approx(
        (round(revenue.low, 6), round(revenue.high, 6))  # type: ignore[union-attr]
    )
    assert {d["outcome"] for d in observational["differences"]} == {"too_few"}  # 12 recipients at 17:00
    assert all(isinstance(d["difference"], float) for d in randomised["differences"])  # numbers, not strings


def test_csv_slots_one_row_per_evidence_and_slot(slot_config: Path) -> None:
    code, out, err = run("report", CAMPAIGN, "--slots", "--format", "csv", "--config", str(slot_config))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = expected_counts()
    assert [(r["evidence"], r["slot"]) for r in rows] == list(expected)
    for r in rows:
        e = expected[(r["evidence"], r["slot"])]
        assert (r["campaign_id"], r["slot_choice"], r["currency"]) == (CAMPAIGN, "split", "USD")
        assert int(r["recipients"]) == e.recipients and float(r["net_revenue"]) == float(e.net)
        for key, interval in _expected_figures(e).items():
            assert interval is not None
            for part in ("estimate", "low", "high"):
                column = key if part == "estimate" else f"{key}_{part}"
                assert float(r[column]) == pytest.approx(round(getattr(interval, part), 6)), column
    morning, evening = rows[0], rows[1]
    assert (evening["click_rate_outcome"], evening["click_rate_leader"], evening["click_rate_diff"]) == (
        "leader", "17:00", ""
    )  # fmt: skip
    assert morning["click_rate_outcome"] == "better" and morning["click_rate_leader"] == "17:00"
    m, v = expected[("randomised", "07:30")], expected[("randomised", "17:00")]
    d = newcombe(v.clicked, v.recipients, m.clicked, m.recipients)
    assert d is not None and float(morning["click_rate_diff_low"]) == pytest.approx(round(d.low, 6))
    assert {rows[2]["click_rate_outcome"], rows[3]["click_rate_outcome"]} == {"leader", "too_few"}  # 40 vs 12


def test_table_and_html_show_the_verdicts(slot_config: Path, tmp_path: Path) -> None:
    code, out, _ = run("report", CAMPAIGN, "--slots", "--config", str(slot_config))
    flat = " ".join(out.split())
    assert code == 0 and "Slots: randomised (causal)" in out and "Slots: observational" in out
    assert " ".join(_expected_click_verdict().split()) in flat
    assert "not assigned at random" in flat and "too few recipients to compare 07:30 and 17:00" in flat
    morning = expected_counts()[("randomised", "07:30")]
    rate = wilson(morning.clicked, morning.recipients)
    assert rate is not None and f"{rate.estimate * 100:.1f}%" in out
    target = tmp_path / "report.html"
    code, _, _ = run("report", CAMPAIGN, "--format", "html", "-o", str(target), "--config", str(slot_config))
    page = target.read_text(encoding="utf-8")
    assert code == 0 and page.count('class="chart intervals"') == 2  # randomised and observational
    assert _expected_click_verdict() in page and 'class="evidence randomised"' in page


def test_nothing_to_compare_is_a_sentence(slot_config: Path) -> None:
    """The shipped campaign has no ledger rows in this database."""
    args = ("report", "mothers-day-2027", "--config", str(slot_config))
    code, out, _ = run(*args, "--slots")
    assert code == 0 and "Nothing has been sent yet: no slots to compare." in out
    code, out, err = run(*args, "--slots", "--format", "csv")
    assert code == 0 and out.count("\n") == 1 and "Nothing has been sent yet" in err  # the header alone
    code, out, _ = run(*args, "--format", "json")
    comparison = json.loads(out)["slot_comparison"]
    assert comparison["evidence"] == [] and comparison["summary"].startswith("Nothing has been sent yet")
    code, _, err = run(*args, "--slots", "--format", "html")
    assert code == 2 and "--slots" in err


def test_all_campaigns_pools_the_comparable_ones(slot_config: Path) -> None:
    code, out, err = run("report", "--all-campaigns", "--format", "json", "--config", str(slot_config))
    assert code == 0, err
    data = json.loads(out)
    assert [c["scope"] for c in data["campaigns"]] == sorted(CAMPAIGNS)
    by_scope = {c["scope"]: c for c in data["campaigns"]}
    assert by_scope[CAMPAIGN]["slot_choice"] == "split" and by_scope[SECOND]["slot_choice"] is None  # not loaded
    overall = data["overall"]
    assert overall["scope"] == "(all campaigns)" and "Pooled" in data["notes"][0]
    assert any(SECOND in note for note in data["notes"])  # its file is not loaded: revenue in USD
    # pooled: slotsplit and second; "other" sent to one slot only and is left out
    for group in overall["evidence"]:
        for s in group["slots"]:
            parts = [expected_counts(c).get((group["evidence"], s["slot"])) for c in (CAMPAIGN, SECOND)]
            pooled = Expected()
            for e in [p for p in parts if p is not None]:
                pooled.recipients += e.recipients
                pooled.open_recipients += e.open_recipients
                pooled.opened += e.opened
                pooled.clicked += e.clicked
                pooled.converted += e.converted
                pooled.nets += e.nets
            assert (s["recipients"], s["clicked"], s["converted"]) == (
                pooled.recipients, pooled.clicked, pooled.converted
            )  # fmt: skip
            for key, interval in _expected_figures(pooled).items():
                assert s[key] == pytest.approx(_rounded(interval)), key
    code, out, _ = run("report", "--all-campaigns", "--format", "csv", "--config", str(slot_config))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and rows[0]["campaign_id"] == "(all campaigns)"
    assert {r["campaign_id"] for r in rows} == {"(all campaigns)", *CAMPAIGNS}
    code, out, _ = run("report", "--all-campaigns", "--config", str(slot_config))
    assert code == 0 and "All campaigns, pooled" in out and f"Campaign {CAMPAIGN}, slot_choice split" in out
    code, out, _ = run("report", "--all-campaigns", "--format", "html", "--config", str(slot_config))
    assert code == 0 and out.count('<section id="slots-') == 1 + len(CAMPAIGNS) and "<script" not in out


def test_all_campaigns_argument_rules(slot_config: Path) -> None:
    code, _, err = run("report", CAMPAIGN, "--all-campaigns", "--config", str(slot_config))
    assert code == 2 and "leave out CAMPAIGN_ID" in err
    code, _, err = run("report", "--all-campaigns", "--by", "slot", "--config", str(slot_config))
    assert code == 2 and "--by" in err
    code, _, err = run("report", "--config", str(slot_config))
    assert code == 2 and "--all-campaigns" in err
