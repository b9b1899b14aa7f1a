"""The slot comparison in the table, JSON, CSV and HTML renderers, and its dot-and-whisker chart."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from xml.etree import ElementTree

from rich.console import Console

from topslot.reporting import svg
from topslot.reporting.model import Report
from topslot.reporting.render_csv import render_slots_csv
from topslot.reporting.render_html import render_html
from topslot.reporting.render_json import render_json, render_slots_json
from topslot.reporting.render_table import render_table
from topslot.reporting.slots import SlotCounts, compare
from topslot.reporting.stats import wilson

NS = "{http://www.w3.org/2000/svg}"
COUNTS = [
    SlotCounts("07:30", "randomised", 200, 150, 60, 20, 8, 40_000, 40_000_000),
    SlotCounts("17:00", "randomised", 200, 150, 75, 44, 10, 60_000, 90_000_000),
    SlotCounts("07:30", "observational", 50, 50, 25, 5, 1, 0, 0),
]


def _with_slots(report: Report, counts: list[SlotCounts] = COUNTS) -> Report:
    return replace(report, slots=compare(counts, report.campaign_id, report.currency, "split"))


def _table(report: Report) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_table(report))
    return console.file.getvalue()


def test_json_numbers_and_stable_keys(seeded_report: Report) -> None:
    data = json.loads(render_json(_with_slots(seeded_report)))["slot_comparison"]
    randomised, observational = data["evidence"]
    assert [s["slot"] for s in randomised["slots"]] == ["07:30", "17:00"]
    assert list(randomised["slots"][0]) == list(randomised["slots"][1]) == list(observational["slots"][0])
    clicks = randomised["slots"][1]["click_rate"]
    expected = wilson(44, 200)
    assert expected is not None and clicks == {
        "estimate": 0.22, "low": round(expected.low, 6), "high": round(expected.high, 6)
    }  # fmt: skip
    assert observational["summary"] == "Only the 07:30 slot was sent to: nothing to compare."
    assert observational["differences"] == [] and randomised["summary"] is None
    alone = json.loads(render_slots_json(_with_slots(seeded_report)))
    assert set(alone) == {"schema_version", "campaign_id", "campaign_name", "generated_at", "slot_comparison"}


def test_csv_has_one_row_per_evidence_and_slot(seeded_report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(render_slots_csv(_with_slots(seeded_report)))))
    assert [(r["evidence"], r["slot"]) for r in rows] == [
        ("randomised", "07:30"), ("randomised", "17:00"), ("observational", "07:30")
    ]  # fmt: skip
    assert rows[0]["revenue_per_recipient"] == "2.0" and rows[1]["click_rate_outcome"] == "leader"
    assert rows[0]["click_rate_outcome"] == "better" and rows[2]["click_rate_outcome"] == ""
    empty = render_slots_csv(_with_slots(seeded_report, []))
    assert empty.count("\n") == 1 and empty.startswith("campaign_id,slot_choice,evidence,slot,")


def test_table_shows_intervals_verdicts_and_the_caveat(seeded_report: Report) -> None:
    text = _table(_with_slots(seeded_report))
    for needle in ("Slot comparison", "Slots: randomised (causal)", "Slots: observational", "22.0%",
                   "17:00 beats 07:30 on clicks by 12.0 points", "not assigned at random",
                   "Only the 07:30 slot was sent to"):  # fmt: skip
        assert needle in text, needle
    assert "Nothing has been sent yet: no slots to compare." in _table(_with_slots(seeded_report, []))


def test_html_section_chart_and_escaping(seeded_report: Report) -> None:
    hostile = [replace(c, slot="<b>x</b>") if c.slot == "17:00" else c for c in COUNTS]
    page = render_html(_with_slots(seeded_report, hostile))
    assert page.count('class="chart intervals"') == 1  # one slot alone draws no chart
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert 'class="evidence observational"' in page and "not assigned at random" in page
    empty = render_html(_with_slots(seeded_report, []))
    assert "Nothing has been sent yet: no slots to compare." in empty and "chart intervals" not in empty


def test_interval_dots_geometry() -> None:
    chart = svg.interval_dots(
        "t", [("click rate", True, [("a", 0.2, 0.1, 0.3), ("b", None, None, None)]),
              ("revenue", False, [("a", 1.0, -0.5, 2.0), ("b", 2.0, 1.0, 3.0)])],  # fmt: skip
    )
    root = ElementTree.fromstring(str(chart))
    dots = [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{NS}circle")]
    assert len(dots) == 3  # b has no click rate: n/a, no dot
    left, plot_w = 70, 560 - 70 - 150
    assert dots[0][0] == round(left + 0.2 / 0.3 * plot_w, 1)  # axis 0–30 % (ticks of 10 points)
    per_unit = plot_w / 3.5  # revenue axis −0.5…3 (ticks of 0.25 below zero, of 1 above)
    zero = left + 0.5 * per_unit
    assert abs(dots[1][0] - (zero + 1.0 * per_unit)) < 0.1 and abs(dots[2][0] - (zero + 2.0 * per_unit)) < 0.1
    assert "n/a" in [t.text for t in root.iter(f"{NS}text")]
    hostile = '</text><script>alert(1)</script>'
    markup = str(svg.interval_dots(hostile, [(hostile, True, [(hostile, 0.1, 0.0, 0.2)])]))
    assert "<script>" not in markup and hostile in [t.text for t in ElementTree.fromstring(markup).iter(f"{NS}text")]
