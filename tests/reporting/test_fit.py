"""The report fits its medium: the terminal table at 80 columns for any number of groups and any
group key (column blocks repeating the labels), and no renderer ever prints a negative zero."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from decimal import Decimal

import pytest
from rich.cells import cell_len
from rich.console import Console

from topslot.reporting.model import GroupFigures, Report
from topslot.reporting.numbers import exact, fixed, money, percent, unsigned
from topslot.reporting.render_csv import render_csv
from topslot.reporting.render_fit import column_blocks, shorten, table_width
from topslot.reporting.render_html import render_html
from topslot.reporting.render_json import render_json
from topslot.reporting.render_table import render_table
from topslot.reporting.slots import SlotCounts, compare

LONG = [
    "cosmetics buyers of the last year who opened twice",
    "America/Argentina/Buenos_Aires",
    "vip",
    "DE",
    "x" * 100,  # the longest segment name a segments file allows
    "(none)",
]
NEGATIVE_ZERO = re.compile(r"(?<![\w.])[-−]0(?:[.,]0+)?%?(?![.\d])")


def _many(report: Report, n: int) -> Report:
    """``n`` groups, each with figures no other group has (planned 10,0ii; revenue ii,345.67; ROI ii.5 %)."""
    groups = []
    for i in range(n):
        g = report.groups[i % len(report.groups)]
        money_ = replace(g.money, revenue=Decimal(f"{i + 10}345.67"), roi=Decimal(f"0.{i + 10}5"))
        deliveries = replace(g.deliveries, planned=10_000 + i)
        groups.append(replace(g, key=f"{LONG[i % len(LONG)]} {i}", deliveries=deliveries, money=money_))
    return replace(report, groups=groups)


def _print(renderable: object, width: int = 80) -> list[str]:
    """Lines as printed, NOT cropped at the width (a line over it would show as such)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable, crop=False)
    return console.export_text(styles=False).splitlines()


def _figure_line(lines: list[str], label: str, value: str) -> bool:
    """Some row labelled ``label`` shows ``value`` (a whole cell) on the same line."""
    return any(line.startswith(label) and f" {value} " in f"{line} " for line in lines)


@pytest.mark.parametrize("count", [1, 2, 5, 12, 30])
def test_table_fits_80_columns_with_every_group(seeded_report: Report, count: int) -> None:
    report = _many(seeded_report, count)
    lines = _print(render_table(report))
    widths = [cell_len(line) for line in lines]
    assert max(widths) <= 80, [line for line in lines if cell_len(line) > 80]
    for i, g in enumerate(report.groups):
        assert _figure_line(lines, "planned", f"{10_000 + i:,}"), g.key
        assert _figure_line(lines, "revenue", f"{i + 10},345.67"), g.key
        assert _figure_line(lines, "ROI", f"{i + 10}.5%"), g.key
    text = "\n".join(lines)
    assert _figure_line(lines, "net revenue", "140.00") and "total" in text  # the total, once
    # blocks: each part names itself, and repeats the labels
    parts = len(re.findall(r"^Sales and ROI(?: \((\d+)/\d+\))?", text, re.M))
    assert parts == sum(line.startswith("incremental ROI ") for line in lines)
    if count >= 12:
        assert parts > 1 and f"Sales and ROI (1/{parts})" in text
    assert "how computed" in text and "promotion cost: discount cost + send cost + fixed cost" in text


def test_short_keys_stay_whole_and_long_ones_are_cut_in_the_middle(seeded_report: Report) -> None:
    report = _many(seeded_report, 12)
    flat = " ".join(" ".join(_print(render_table(report))).split())
    assert "vip 2" in flat and "(none) 5" in flat and "DE 3" in flat
    assert "x" * 101 not in flat and "…" in flat  # 100 x's plus " 4": shortened, not blown across the width
    assert shorten("a" * 100 + " 4", 36) == "a" * 24 + "…" + "a" * 9 + " 4"
    assert shorten("short", 36) == "short"


def test_wide_console_keeps_one_block(seeded_report: Report) -> None:
    lines = _print(render_table(_many(seeded_report, 5)), width=200)
    assert "Deliveries" in [line.strip() for line in lines]
    assert not any(line.startswith("Deliveries (") for line in lines)
    assert max(cell_len(line) for line in lines) <= 200


def test_column_blocks_are_as_few_and_as_even_as_fit() -> None:
    widths = [8] * 13
    blocks = column_blocks(widths, 26, 80)
    assert [len(b) for b in blocks] == [4, 3, 3, 3] and sum(blocks, []) == list(range(13))
    assert all(table_width([widths[i] for i in b], 26) <= 80 for b in blocks)
    assert column_blocks([8, 8], 26, 80) == [[0, 1]]
    assert column_blocks([200], 26, 80) == [[0]]  # too wide alone: a block of its own
    assert column_blocks([], 26, 80) == [[]]


def test_slot_table_transposes_to_fit(seeded_report: Report) -> None:
    counts = [SlotCounts(f"{h:02d}:00", "randomised", 20_000, 15_000, 6_000, 2_000, 800, 4_000_000_00, 10**14)
              for h in range(6, 20)]  # fmt: skip
    report = replace(seeded_report, slots=compare(counts, "spring", "USD", "split"))
    lines = _print(render_table(report))
    assert max(cell_len(line) for line in lines) <= 80
    for c in counts:
        assert any(c.slot in line for line in lines), c.slot
    assert any(line.startswith("Slots: randomised (causal) (1/") for line in lines)
    assert any(line.startswith("human open rate") and "40.0% (" in line for line in lines)
    wide = _print(render_table(report), width=200)
    assert any(line.startswith("06:00 ") for line in wide)  # wide enough: a row per slot, as before


def _zeroes(g: GroupFigures) -> GroupFigures:
    """What rounding hands the renderers: −0.00 money, −0.0000 ratios (−0.001 → −0.00, −0.00001 → −0.0000)."""
    minus_cent, minus_ratio = Decimal("-0.001").quantize(Decimal("0.01")), Decimal("-0.00001").quantize(Decimal("1E-4"))
    assert str(minus_cent) == "-0.00" and str(minus_ratio) == "-0.0000"
    assert g.money.lift is not None
    lift = replace(
        g.money.lift, relative=minus_ratio, incremental_purchasers=minus_cent, incremental_revenue=minus_cent
    )
    money_ = replace(g.money, revenue=Decimal("40.00"), refunds=Decimal("40.00"), net_revenue=Decimal("0.00"),
                     net_profit=minus_cent, roi=minus_ratio, incremental_roi=minus_ratio, margin_pct=minus_ratio,
                     gross_profit=minus_cent, lift=lift)  # fmt: skip
    return replace(g, money=money_, ctr=minus_ratio)


def test_no_renderer_prints_a_negative_zero(seeded_report: Report) -> None:
    groups = [_zeroes(g) for g in seeded_report.groups]
    report = replace(seeded_report, groups=groups, total=_zeroes(seeded_report.total))
    for row in csv.reader(io.StringIO(render_csv(report))):
        assert not [cell for cell in row if NEGATIVE_ZERO.fullmatch(cell)], row
    data = json.loads(render_json(report))
    strings = [v for g in [*data["groups"], data["total"]] for v in g.values() if isinstance(v, str)]
    assert "0.00" in strings and "0.0000" in strings and not [s for s in strings if s.startswith("-0")]
    table = "\n".join(_print(render_table(report), width=200))
    assert not NEGATIVE_ZERO.findall(table) and "0.0%" in table
    page = render_html(report)
    assert not NEGATIVE_ZERO.findall(re.sub(r"<style>.*?</style>", "", page, flags=re.S)), NEGATIVE_ZERO.findall(page)


def test_number_helpers() -> None:
    assert str(unsigned(Decimal("-0.00"))) == "0.00" and str(unsigned(Decimal("-1.50"))) == "-1.50"
    assert str(unsigned(-0.0)) == "0.0" and exact(Decimal("-0.0000")) == "0.0000"
    assert (money(Decimal("-0.004")), money(-0.001), money(Decimal("-1234.5")), money(None)) == (
        "0.00", "0.00", "-1,234.50", "n/a"
    )  # fmt: skip
    assert (percent(Decimal("-0.0004")), percent(-0.00001), percent(Decimal("-0.5"))) == ("0.0%", "0.0%", "-50.0%")
    assert (fixed(-0.04, 1), fixed(-0.06, 1)) == ("0.0", "-0.1")
