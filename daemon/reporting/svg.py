"""Small inline-SVG charts (pure): each function returns ``Markup`` of one ``<svg>`` element.

Every text that may come from data (labels, names) goes through ``markupsafe.escape``; numbers are
formatted here. No scripts, no external fonts, no links: the page renders offline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

from markupsafe import Markup, escape

from topslot.reporting.numbers import fixed, percent

OPEN_COLOUR = "#4c78a8"
CLICK_COLOUR = "#f58518"
FUNNEL_COLOURS = ("#264653", "#2a9d8f", "#8ab17d", "#e9c46a", "#f4a261")
GAIN_COLOUR = "#2a9d8f"
LOSS_COLOUR = "#e76f51"
AXIS_COLOUR = "#9aa5b1"
TEXT_COLOUR = "#1f2933"
MUTED_COLOUR = "#616e7c"


def nice_ticks(maximum: float, count: int = 4, *, integer: bool = False) -> list[float]:
    """Round tick values from 0 up to at least ``maximum`` (1, 2, 2.5 or 5 × 10^k steps);
    ``integer``: whole-number steps only (counts)."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1, math.ceil(step))
    top = math.ceil(maximum / step - 1e-9) * step
    n = int(round(top / step))
    return [round(i * step, 10) for i in range(n + 1)]


def fmt_number(value: float | int | Decimal) -> str:
    """1234 → '1,234'; 2.5 → '2.5'; 1500000 → '1.5M' (short axis labels)."""
    v = float(value)
    if abs(v) >= 1_000_000:
        return f"{v / 1_000_000:.3g}M"
    if abs(v) >= 10_000:
        return f"{v / 1000:.3g}k"
    if v == int(v):
        return f"{int(v):,}"
    return fixed(v, 2).rstrip("0").rstrip(".")


def fmt_percent(value: Decimal | float | None) -> str:
    return percent(value)


def _attrs(**attrs: object) -> str:
    return "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for k, v in attrs.items())


def _text(x: float, y: float, content: object, **attrs: object) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}"{_attrs(**attrs)}>{escape(str(content))}</text>'


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str | None = None, **attrs: object) -> str:
    inner = f"<title>{escape(title)}</title>" if title else ""
    geometry = f'x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}"'
    return f'<rect {geometry} fill="{fill}"{_attrs(**attrs)}>{inner}</rect>'


def _title(x: float, title: str, show: bool) -> list[str]:
    """The chart's visible title (``show``), at most the size of a section heading. Without it, the
    title is still the ``<title>`` and ``aria-label`` of the chart, for screen readers; the HTML page
    captions its charts itself (``figcaption.chart-title``), in CSS pixels that do not scale with the
    chart."""
    if not show:
        return []
    return [_text(x, 20, title, class_="chart-title", fill=TEXT_COLOUR, font_size=14, font_weight=600)]


def _svg(width: int, height: int, label: str, body: list[str], css_class: str) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
    )
    return Markup(head + "".join(body) + "</svg>")


def histogram(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[int]]],
    *,
    y_max: float | None = None,
    width: int = 520,
    height: int = 280,
    show_title: bool = True,
) -> Markup:
    """Grouped vertical bars: one group per label, one bar per series (name, colour, values).

    ``y_max`` lets panels share a scale so they can be compared side by side; ``show_title=False``:
    the page captions the chart (the legend keeps its place)."""
    left, right, top, bottom = 44, 10, 34, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([v for _, _, values in series for v in values] + [0])
    ticks = nice_ticks(max(y_max or 0, peak), integer=True)
    scale = plot_h / ticks[-1]
    body = _title(left, title, show_title)
    for t in ticks:
        y = top + plot_h - t * scale
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e4e7eb" />')
        body.append(_text(left - 6, y + 4, fmt_number(t), fill=MUTED_COLOUR, font_size=10, text_anchor="end"))
    n = max(len(labels), 1)
    slot_w = plot_w / n
    bar_w = slot_w * 0.8 / max(len(series), 1)
    for i, label in enumerate(labels):
        x0 = left + i * slot_w + slot_w * 0.1
        for j, (name, colour, values) in enumerate(series):
            v = values[i] if i < len(values) else 0
            h = v * scale
            body.append(_rect(x0 + j * bar_w, top + plot_h - h, bar_w - 1, h, colour, f"{label} {name}: {v:,}"))
        lx, ly = left + (i + 0.5) * slot_w, top + plot_h + 14
        body.append(_text(lx, ly, label, fill=MUTED_COLOUR, font_size=10, text_anchor="middle"))
    axis_y = top + plot_h
    body.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="{AXIS_COLOUR}" />')
    body.append(_text(left + plot_w / 2, height - 8, "minutes since hand-over", fill=MUTED_COLOUR, font_size=10,
                      text_anchor="middle"))  # fmt: skip
    lx = width - right
    for name, colour, _ in reversed(series):
        tw = 8 + 6.5 * len(name)
        lx -= tw + 14
        body.append(_rect(lx, 11, 10, 10, colour))
        body.append(_text(lx + 14, 20, name, fill=TEXT_COLOUR, font_size=11))
    return _svg(width, height, title, body, "chart histogram")


def funnel(
    title: str, stages: Sequence[tuple[str, int]], *, width: int = 560, row: int = 44, show_title: bool = True
) -> Markup:
    """Horizontal bars, each as wide as its share of the first stage, with the step conversion.
    ``show_title=False`` keeps the title for screen readers only (the page has a heading)."""
    left, right, top = 110, 150, (34 if show_title else 6)
    height = top + row * len(stages) + 10
    plot_w = width - left - right
    first = stages[0][1] if stages else 0
    body = _title(0, title, show_title)
    previous: int | None = None
    for i, (label, value) in enumerate(stages):
        y = top + i * row
        w = plot_w * (value / first) if first else 0
        colour = FUNNEL_COLOURS[i % len(FUNNEL_COLOURS)]
        body.append(_text(left - 10, y + row / 2 + 4, label, fill=TEXT_COLOUR, font_size=12, text_anchor="end"))
        body.append(_rect(left, y + 6, plot_w, row - 14, "#f0f2f5", rx=4))
        body.append(_rect(left, y + 6, max(w, 2 if value else 0), row - 14, colour, f"{label}: {value:,}", rx=4))
        step = (
            "" if previous is None else f" · {fmt_percent(Decimal(value) / previous if previous else None)} of previous"
        )
        body.append(_text(left + plot_w + 8, y + row / 2 + 4, f"{value:,}{step}", fill=TEXT_COLOUR, font_size=11))
        previous = value
    return _svg(width, height, title, body, "chart funnel")


def signed_bars(title: str, items: Sequence[tuple[str, Decimal | None]], *, width: int = 520, height: int = 260,
                as_percent: bool = True, show_title: bool = True) -> Markup:  # fmt: skip
    """Vertical bars above (gain) or below (loss) a zero line; ``None`` values are shown as n/a."""
    left, right, top, bottom = 64, 10, (34 if show_title else 16), 34
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [float(v) for _, v in items if v is not None]
    hi, lo = max(values + [0.0]), min(values + [0.0])
    up = nice_ticks(hi) if hi > 0 else [0.0]
    down = nice_ticks(-lo) if lo < 0 else [0.0]
    span = up[-1] + down[-1] or 1.0
    scale = plot_h / span
    zero_y = top + up[-1] * scale

    def label(v: float) -> str:
        return fmt_percent(v) if as_percent else fmt_number(v)

    body = _title(left, title, show_title)
    for t in [*up, *(-d for d in down[1:])]:
        y = zero_y - t * scale
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e4e7eb" />')
        body.append(_text(left - 6, y + 4, label(t), fill=MUTED_COLOUR, font_size=10, text_anchor="end"))
    n = max(len(items), 1)
    slot_w = plot_w / n
    bar_w = min(slot_w * 0.6, 90)
    for i, (name, value) in enumerate(items):
        cx = left + (i + 0.5) * slot_w
        if value is None:
            body.append(_text(cx, zero_y - 6, "n/a", fill=MUTED_COLOUR, font_size=11, text_anchor="middle"))
        else:
            v = float(value)
            h = abs(v) * scale
            y = zero_y - h if v >= 0 else zero_y
            colour = GAIN_COLOUR if v >= 0 else LOSS_COLOUR
            body.append(_rect(cx - bar_w / 2, y, bar_w, h, colour, f"{name}: {label(v)}"))
            ty = y - 5 if v >= 0 else y + h + 13
            body.append(_text(cx, ty, label(v), fill=TEXT_COLOUR, font_size=11, text_anchor="middle", font_weight=600))
        body.append(_text(cx, height - 12, name, fill=TEXT_COLOUR, font_size=12, text_anchor="middle"))
    body.append(f'<line x1="{left}" y1="{zero_y:.1f}" x2="{width - right}" y2="{zero_y:.1f}" stroke="{AXIS_COLOUR}" />')
    return _svg(width, height, title, body, "chart bars")


SLOT_COLOURS = (OPEN_COLOUR, CLICK_COLOUR, "#54a24b", "#b279a2", "#9d755d", "#e45756")


def interval_dots(
    title: str,
    panels: Sequence[tuple[str, bool, Sequence[tuple[str, float | None, float | None, float | None]]]],
    *,
    width: int = 560,
    row: int = 22,
    show_title: bool = True,
) -> Markup:
    """Dot-and-whisker panels for comparing slots: one panel per figure (label, as a percentage?,
    rows of (slot, estimate, low, high)), one row per slot — a dot at the estimate, a bar across the
    95 % interval, the value written beside it. Every panel starts at zero (or below, for a negative
    interval) so that overlapping bars read as "no clear difference". ``None`` rows say n/a."""
    left, right, gap = 70, 150, 26
    top = 34 if show_title else 6
    plot_w = width - left - right
    body = _title(0, title, show_title)
    y = top
    for label, as_percent, rows in panels:
        highs = [r[3] for r in rows if r[3] is not None]
        lows = [r[2] for r in rows if r[2] is not None]
        up = nice_ticks(max(highs + [0.0]), 4) if max(highs + [0.0]) > 0 else [0.0, 1.0]
        down = nice_ticks(-min(lows + [0.0]), 2) if min(lows + [0.0]) < 0 else [0.0]
        span = up[-1] + down[-1] or 1.0

        def x_of(v: float, _down: float = down[-1], _span: float = span) -> float:
            return left + (v + _down) / _span * plot_w

        def fmt(v: float, _percent: bool = as_percent) -> str:
            return fmt_percent(v) if _percent else fmt_number(round(v, 2))

        body.append(_text(0, y + 12, label, fill=TEXT_COLOUR, font_size=12, font_weight=600))
        y += 18
        bottom = y + row * len(rows)
        for t in [*(-d for d in reversed(down[1:])), *up]:
            tx = x_of(t)
            stroke = AXIS_COLOUR if t == 0 else "#e4e7eb"
            body.append(f'<line x1="{tx:.1f}" y1="{y:.1f}" x2="{tx:.1f}" y2="{bottom:.1f}" stroke="{stroke}" />')
            body.append(_text(tx, bottom + 11, fmt(t), fill=MUTED_COLOUR, font_size=9, text_anchor="middle"))
        for i, (slot, estimate, low, high) in enumerate(rows):
            cy = y + i * row + row / 2
            colour = SLOT_COLOURS[i % len(SLOT_COLOURS)]
            body.append(_text(left - 8, cy + 4, slot, fill=TEXT_COLOUR, font_size=12, text_anchor="end"))
            if estimate is None or low is None or high is None:
                body.append(_text(left + 4, cy + 4, "n/a", fill=MUTED_COLOUR, font_size=11))
                continue
            summary = f"{fmt(estimate)} ({fmt(low)}–{fmt(high)})"
            x1, x2, cx = x_of(low), x_of(high), x_of(estimate)
            whisker = (
                f'<g class="interval"><title>{escape(f"{slot} {label}: {summary}")}</title>'
                f'<line x1="{x1:.1f}" y1="{cy:.1f}" x2="{x2:.1f}" y2="{cy:.1f}" stroke="{colour}" stroke-width="3" />'
                f'<line x1="{x1:.1f}" y1="{cy - 5:.1f}" x2="{x1:.1f}" y2="{cy + 5:.1f}" stroke="{colour}" />'
                f'<line x1="{x2:.1f}" y1="{cy - 5:.1f}" x2="{x2:.1f}" y2="{cy + 5:.1f}" stroke="{colour}" />'
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{colour}" stroke="#fff" /></g>'
            )
            body.append(whisker)
            body.append(_text(left + plot_w + 8, cy + 4, summary, fill=TEXT_COLOUR, font_size=11))
        y = bottom + gap
    return _svg(width, int(y), title, body, "chart intervals")
