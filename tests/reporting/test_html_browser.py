"""The HTML report in a real browser: Debian's headless Chromium renders the file offline, takes a
screenshot (not blank: the header's colour, many colours) and dumps the DOM (the SVG charts and the
numbers are there). Then, driven over the DevTools protocol (``reporting.cdp``), it lays the page out
at 1280 and at 390 CSS pixels (a phone) — the seeded report and one with 12 long-named groups and
ten-digit figures — and measures it: nothing wider than the viewport, no card overflowing, chart
captions no bigger than section headings and charts never enlarged, wide tables scrolling in their
own box with the label column pinned; the screenshots' right-hand margin is the page background.
Skipped when /usr/bin/chromium is absent (``apt-get install -y chromium``)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from reporting.cdp import chromium_page
from reporting.png import pixel, read_png
from reporting.seed import CAMPAIGN, COSTS, NAME, T0, WINDOW, seed
from topslot.reporting.data import ReportQuery, build_report
from topslot.reporting.model import Report
from topslot.reporting.render_html import render_html
from topslot.reporting.slots import SlotCounts, compare
from topslot.store.db import open_engine, upgrade

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    tmp = tmp_path_factory.mktemp("report")

    async def build() -> Report:
        engine = open_engine(f"sqlite+aiosqlite:///{tmp / 'topslot.db'}")
        try:
            await upgrade(engine)
            await seed(engine)
            query = ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=COSTS)
            return await build_report(engine, query, T0, name=NAME, charts=True)
        finally:
            await engine.dispose()

    return asyncio.run(build())


@pytest.fixture(scope="module")
def html_file(report: Report, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("page") / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path


def _crowded(report: Report) -> Report:
    """12 groups with long names (one unbroken), ten-digit money, a long campaign name, slot charts."""
    names = ["cosmetics buyers of the last year who opened twice", "America/Argentina/Buenos_Aires", "vip",
             "x" * 100]  # fmt: skip
    big = Decimal("1234567890.12")
    money = replace(report.total.money, net_revenue=big, revenue=big, promotion_cost=big, roi=Decimal("12345.6789"))
    total = replace(report.total, money=money, deliveries=replace(report.total.deliveries, sent=1_234_567_890))
    groups = [replace(report.groups[i % 2], key=f"{names[i % 4]} {i}", money=money) for i in range(12)]
    counts = [SlotCounts(slot, "randomised", 20_000, 15_000, 6_000, 2_000, 800, 4_000_000_00, 10**14)
              for slot in ("07:30", "17:00")]  # fmt: skip
    slots = compare(counts, report.campaign_id, report.currency, "split")
    return replace(report, campaign_name="Spring " * 30, groups=groups, total=total, slots=slots)


@pytest.fixture(scope="module")
def crowded_file(report: Report, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crowded") / "crowded.html"
    path.write_text(render_html(_crowded(report)), encoding="utf-8")
    return path


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def test_screenshot_is_a_rendered_page(html_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    result = _chromium(tmp_path, f"--screenshot={png}", "--window-size=1200,1600", html_file.as_uri())
    assert png.exists(), result.stderr[-2000:]
    width, height, bpp, rows = read_png(png)
    assert (width, height) == (1200, 1600)
    assert pixel(rows, bpp, 10, 10) == (0x26, 0x46, 0x53)  # the header band
    colours = {rows[y][x : x + 3] for y in range(0, height, 7) for x in range(0, width * bpp, bpp * 5)}
    assert len(colours) > 50  # text, charts, cards: far from blank
    # the funnel's first bar (#264653) and the ROI bars (#2a9d8f) were painted somewhere below the fold line
    painted = {rows[y][x : x + 3] for y in range(600, height, 3) for x in range(0, width * bpp, bpp * 3)}
    assert bytes((0x2A, 0x9D, 0x8F)) in painted


def test_dom_has_the_charts_and_the_numbers(html_file: Path, tmp_path: Path) -> None:
    result = _chromium(tmp_path, "--dump-dom", html_file.as_uri())
    dom = result.stdout
    assert result.returncode == 0 and "<svg" in dom, result.stderr[-2000:]
    assert len(re.findall(r'<svg[^>]*class="chart histogram"', dom)) == 2  # 07:30 and 17:00 side by side
    assert 'class="chart funnel"' in dom and 'class="chart bars"' in dom
    assert "07:30 slot: human opens and clicks" in dom and "17:00 slot: human opens and clicks" in dom
    assert 'Spring &lt;sale&gt; &amp; "friends"' in dom and "<sale>" not in dom  # escaped, never markup
    for figure in ("140.00", "6,000.0%", "33.3%", "132.3%", "4,900.0%", "61.00"):
        assert figure in dom
    assert "<script" not in dom and "https://" not in dom
    assert "http://" not in dom.replace("http://www.w3.org/2000/svg", "")  # nothing fetched at view time


# Measured in the page (CSS pixels). ``stray``: elements outside a table's scroll box whose right
# edge passes the viewport; each card's and each scroll box's own overflow; the label column's
# position once its table is scrolled to the far right.
PROBE = """(() => {
  const px = e => parseFloat(getComputedStyle(e).fontSize);
  const right = e => e.getBoundingClientRect().right;
  const name = e => e.tagName.toLowerCase() + '.' + (e.getAttribute('class') || '');
  const boxes = [...document.querySelectorAll('.table-scroll')];
  const scrolled = boxes.map(box => {
    box.scrollLeft = box.scrollWidth;
    const cell = box.querySelector('tbody tr:not(:first-child) td:first-child') || box.querySelector('td');
    const out = {box: box.getBoundingClientRect().left, cell: cell.getBoundingClientRect().left,
                 cellWidth: cell.getBoundingClientRect().width, clipped: cell.scrollWidth > cell.clientWidth + 1,
                 scrollLeft: box.scrollLeft};
    box.scrollLeft = 0;
    return out;
  });
  return {
    innerWidth, scrollWidth: document.documentElement.scrollWidth, bodyScrollWidth: document.body.scrollWidth,
    stray: [...document.querySelectorAll('body *')]
      .filter(e => !e.closest('.table-scroll') && !e.closest('svg') && right(e) > innerWidth + 0.5).map(name),
    cards: [...document.querySelectorAll('.kpi, .kpi *')].map(e => [e.innerText, e.scrollWidth, e.clientWidth,
                                                                    right(e)]),
    h2: Math.min(...[...document.querySelectorAll('section h2')].map(px)),
    captions: [...document.querySelectorAll('.chart-title')].map(e => [e.textContent, px(e)]),
    charts: [...document.querySelectorAll('svg.chart')].map(s => [s.getAttribute('class'),
      s.getBoundingClientRect().width, s.viewBox.baseVal.width, right(s)]),
    tables: boxes.map(b => [getComputedStyle(b).overflowX, b.scrollWidth, b.clientWidth, right(b)]),
    scrolled,
  };
})()"""
BACKGROUND = (0xF5, 0xF7, 0xFA)
HEADER = (0x26, 0x46, 0x53)


async def _measure(page_file: Path, profile: Path, width: int, png: Path) -> dict[str, Any]:
    async with chromium_page(CHROMIUM, FLAGS, profile) as page:
        await page.open(page_file.as_uri(), width, 900, mobile=width < 600)
        probe: dict[str, Any] = await page.evaluate(PROBE)
        await page.screenshot(png, min(3000, await page.evaluate("document.documentElement.scrollHeight")))
        return probe


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("which", ["seeded", "crowded"])
def test_layout_fits_the_viewport(html_file: Path, crowded_file: Path, tmp_path: Path, width: int, which: str) -> None:
    page_file = html_file if which == "seeded" else crowded_file
    png = tmp_path / f"{which}-{width}.png"
    m = asyncio.run(asyncio.wait_for(_measure(page_file, tmp_path / "profile", width, png), 120))
    # the page itself never scrolls sideways
    assert m["innerWidth"] == width and m["scrollWidth"] <= width and m["bodyScrollWidth"] <= width, m
    assert m["stray"] == [], m["stray"]
    # no card overflows its box (nor any part of a card, the figure included)
    assert m["cards"] and all(scroll <= client + 1 and r <= width for _, scroll, client, r in m["cards"]), m["cards"]
    # chart captions: at most a section heading's size, and readable; charts never drawn larger than designed
    assert m["captions"] and all(11 <= size <= m["h2"] for _, size in m["captions"]), (m["captions"], m["h2"])
    assert len(m["charts"]) >= 3 and all(w <= design + 0.5 and r <= width for _, w, design, r in m["charts"])
    # tables scroll inside their own box, and the label column stays in view when they do
    assert m["tables"] and all(overflow == "auto" and r <= width for overflow, _, _, r in m["tables"]), m["tables"]
    for s in m["scrolled"]:
        assert abs(s["cell"] - s["box"]) <= 1 and not s["clipped"], s
    assert m["scrolled"][-1]["cellWidth"] >= 110  # the figures' labels: 9em on a phone, 15em wider
    if which == "crowded":
        _, content, box, _ = m["tables"][-1]  # the figures: 13 columns do not fit, even at 1280
        assert content > box and m["scrolled"][-1]["scrollLeft"] > 0
    _margin_is_background(png, width)


def _margin_is_background(png: Path, width: int) -> None:
    """The screenshot is the page, and its right-hand margin (below the header band) holds nothing
    but the page background: no card, chart or table colour bleeding past the content."""
    w, height, bpp, rows = read_png(png)
    assert w == width and pixel(rows, bpp, 2, 2) == HEADER
    top = next(y for y in range(height) if pixel(rows, bpp, 2, y) != HEADER)
    margin = range(width - 6, width)  # main's padding is 10 px on a phone, 32 px or more at 1280
    stains = {(x, y, pixel(rows, bpp, x, y)) for y in range(top, height) for x in margin}
    assert {p for _, _, p in stains} == {BACKGROUND}, sorted(stains)[:5]
    colours = {rows[y][x * bpp : x * bpp + 3] for y in range(top, height, 5) for x in range(0, width, 4)}
    assert len(colours) > 30  # text, charts and cards were painted
