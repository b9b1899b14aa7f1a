"""The chart functions: scales, bar geometry, escaping of every text from data."""

from __future__ import annotations

import re
from decimal import Decimal
from xml.etree import ElementTree

from topslot.reporting import svg

NS = "{http://www.w3.org/2000/svg}"


def _parse(markup: str) -> ElementTree.Element:
    return ElementTree.fromstring(str(markup))  # well-formed XML or this raises


def test_nice_ticks() -> None:
    assert svg.nice_ticks(100) == [0, 25, 50, 75, 100]
    assert svg.nice_ticks(7) == [0, 2, 4, 6, 8]
    assert svg.nice_ticks(0.37) == [0, 0.1, 0.2, 0.3, 0.4]
    assert svg.nice_ticks(2, integer=True) == [0, 1, 2]
    assert svg.nice_ticks(0) == [0, 1]


def test_number_formats() -> None:
    assert [svg.fmt_number(v) for v in (1234, 2.5, 1_500_000, 25_000)] == ["1,234", "2.5", "1.5M", "25k"]
    assert (svg.fmt_percent(Decimal("0.3333")), svg.fmt_percent(None), svg.fmt_percent(60)) == (
        "33.3%",
        "n/a",
        "6,000.0%",
    )


def test_histogram_bars_scale_to_the_shared_maximum() -> None:
    chart = svg.histogram("t", ["0m", "5m"], [("opens", "#111111", [2, 1]), ("clicks", "#222222", [0, 1])], y_max=4)
    root = _parse(chart)
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    heights = {r.find(f"{NS}title").text: float(r.get("height")) for r in bars}
    plot_h = 280 - 34 - 46
    assert heights["0m opens: 2"] == round(plot_h / 2, 1) and heights["5m clicks: 1"] == round(plot_h / 4, 1)
    assert heights["0m clicks: 0"] == 0


def test_funnel_widths_are_shares_of_the_first_stage() -> None:
    root = _parse(svg.funnel("f", [("sent", 200), ("opened", 50), ("clicked", 0)]))
    widths = {
        r.find(f"{NS}title").text: float(r.get("width"))
        for r in root.iter(f"{NS}rect")
        if r.find(f"{NS}title") is not None
    }
    plot_w = 560 - 110 - 150
    assert widths == {"sent: 200": plot_w, "opened: 50": plot_w / 4, "clicked: 0": 0}
    assert "25.0% of previous" in str(svg.funnel("f", [("a", 4), ("b", 1)]))


def test_signed_bars_go_below_zero_for_losses_and_say_na() -> None:
    chart = svg.signed_bars("roi", [("email", Decimal("1.5")), ("sms", Decimal("-0.5")), ("im", None)])
    root = _parse(chart)
    bars = {r.find(f"{NS}title").text: r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None}
    gain, loss = bars["email: 150.0%"], bars["sms: -50.0%"]
    assert gain.get("fill") == svg.GAIN_COLOUR and loss.get("fill") == svg.LOSS_COLOUR
    zero = float(gain.get("y")) + float(gain.get("height"))
    assert float(loss.get("y")) == zero  # hangs from the zero line
    assert "n/a" in [t.text for t in root.iter(f"{NS}text")]


def test_text_from_data_is_escaped() -> None:
    hostile = '</text><script>alert(1)</script><text x="'
    for chart in (
        svg.histogram(hostile, [hostile], [(hostile, "#000", [1])]),
        svg.funnel(hostile, [(hostile, 1)]),
        svg.signed_bars(hostile, [(hostile, Decimal(1))]),
    ):
        assert "<script>" not in str(chart)
        root = _parse(chart)
        assert hostile in [t.text for t in root.iter(f"{NS}text")] + [root.get("aria-label")]
        assert not re.search(r"<(script|image|a|foreignObject)\b", str(chart))
