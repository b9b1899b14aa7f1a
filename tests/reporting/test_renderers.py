"""JSON, CSV, table and HTML renderings of the seeded report."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

from rich.console import Console

from topslot.reporting.model import Report
from topslot.reporting.records import KNOWN_SKIP_REASONS
from topslot.reporting.render_csv import render_csv
from topslot.reporting.render_html import render_html
from topslot.reporting.render_json import render_json
from topslot.reporting.render_table import render_table


def test_json_has_stable_keys_and_exact_decimals(seeded_report: Report) -> None:
    data = json.loads(render_json(seeded_report))
    assert data["schema_version"] == 1 and data["campaign_id"] == "spring" and data["by"] == "channel"
    assert [g["group"] for g in data["groups"]] == ["email", "sms"]
    total = data["total"]
    assert total["net_revenue"] == "140.00" and total["send_cost"] == "1.00"
    assert (total["promotion_cost"], total["roi"]) == ("16.00", "2.8125")  # (61 − 16) / 16; 16 = discount 15 + send 1
    assert data["how_computed"]["roi"].startswith("(gross profit − promotion cost)")
    assert total["lift"] == "0.3333" and total["skipped_by_reason"] == {"holdout": 2, "no_consent": 1}
    assert (total["margin_basis"], total["incremental_revenue"], total["currency_mismatches"]) == ("mixed", "165.00", 1)
    assert data["groups"][1]["lift"] is None  # sms: nobody held out bought
    assert list(data["groups"][0]) == list(total)  # every group has the same keys in the same order
    assert data["holdout_window"] == {"start": "2027-05-05T00:00:00+00:00", "end": "2027-05-20T00:00:00+00:00"}
    assert len(data["timing"]) == 20 and data["timing"][0] == {
        "slot": "07:30", "from_minutes": 0, "to_minutes": 5, "opens": 2, "clicks": 0
    }  # fmt: skip


def test_csv_one_row_per_group_then_total(seeded_report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(seeded_report))))
    assert [(r["by"], r["group"]) for r in rows] == [("channel", "email"), ("channel", "sms"), ("all", "total")]
    assert all(f"skipped_{reason}" in rows[0] for reason in KNOWN_SKIP_REASONS)
    email, sms, total = rows
    # email: (gross profit 36 − promotion cost (discount 15 + send 0.50)) / 15.50
    assert (email["sent"], email["revenue"], email["roi"], email["ctr"]) == ("4", "130.00", "1.3226", "0.3333")
    assert (sms["skipped_no_consent"], sms["lift"], total["gross_profit"]) == ("1", "", "61.00")


def test_csv_defuses_spreadsheet_formulas(seeded_report: Report) -> None:
    hostile = replace(seeded_report, groups=[replace(seeded_report.groups[0], key="=HYPERLINK(1)")])
    rows = list(csv.DictReader(io.StringIO(render_csv(hostile))))
    assert rows[0]["group"] == "'=HYPERLINK(1)"


def test_table_shows_every_group_and_the_total(seeded_report: Report) -> None:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render_table(seeded_report))
    text = console.file.getvalue()
    for needle in ("Deliveries", "Sales and ROI", "Holdout", "email", "sms", "total", "132.3%", "43.6%",
                   "skipped: holdout", "140.00", "n/a"):  # fmt: skip
        assert needle in text, needle
    assert 'Spring <sale> & "friends"' in text  # printed as text, never as rich markup
    assert "how computed" in text and "promotion cost: discount cost + send cost + fixed cost" in text


def test_html_is_self_contained_and_escaped(seeded_report: Report) -> None:
    hostile = replace(
        seeded_report,
        groups=[replace(g, key=f"<img src=x onerror=alert({i})>") for i, g in enumerate(seeded_report.groups)],
    )
    page = render_html(hostile)
    assert "<img" not in page and "&lt;img src=x onerror=alert(0)&gt;" in page
    assert "Spring &lt;sale&gt; &amp; &#34;friends&#34;" in page
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count('class="chart histogram"') == 2 and 'class="chart funnel"' in page
