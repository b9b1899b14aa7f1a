"""The HTML report in a real browser: Debian's headless Chromium renders the file offline, takes a
screenshot (not blank: the header's colour, many colours) and dumps the DOM (the SVG charts and the
numbers are there). Skipped when /usr/bin/chromium is absent (``apt-get install -y chromium``)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from daemon.reporting.data import ReportQuery, build_report
from daemon.reporting.render_html import render_html
from daemon.store.db import open_engine, upgrade
from reporting.png import pixel, read_png
from reporting.seed import CAMPAIGN, COSTS, NAME, T0, WINDOW, seed

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def html_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")

    async def build() -> str:
        engine = open_engine(f"sqlite+aiosqlite:///{tmp / 'topslot.db'}")
        try:
            await upgrade(engine)
            await seed(engine)
            query = ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=COSTS)
            return render_html(await build_report(engine, query, T0, name=NAME, charts=True))
        finally:
            await engine.dispose()

    path = tmp / "report.html"
    path.write_text(asyncio.run(build()), encoding="utf-8")
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
