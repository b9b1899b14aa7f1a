"""The slot comparison as rich tables: per kind of evidence, one row per slot with each figure and
its 95 % interval, then the verdicts (and the caveat of observational rows)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from daemon.reporting.slot_records import display_interval
from daemon.reporting.slots import METRICS, SlotComparison, SlotOverview


def slot_tables(comparison: SlotComparison | None, title: str = "Slot comparison") -> list[Table | Text]:
    if comparison is None:
        return []
    heading = f"{title} (95 % intervals; revenue in {comparison.currency})"
    out: list[Table | Text] = [Text(heading, style="bold")]
    if comparison.summary:
        return [*out, Text(comparison.summary)]
    out += [Text(f"note: {note}", style="yellow") for note in comparison.notes]
    for group in comparison.groups:
        table = Table(title=f"Slots: {group.label}", title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("slot", no_wrap=True)
        table.add_column("recipients", justify="right")
        for metric in METRICS:
            table.add_column(metric.label, justify="right")
        for s in group.slots:
            cells = [display_interval(s.figures[m.key], m.rate) for m in METRICS]
            table.add_row(Text(s.slot), f"{s.counts.recipients:,}", *cells)
        out.append(table)
        if group.caveat:
            out.append(Text(group.caveat, style="yellow"))
        for line in [group.summary] if group.summary else [d.verdict for d in group.differences]:
            out.append(Text(f"  {line}"))
    return out


def overview_tables(overview: SlotOverview) -> list[Table | Text]:
    """``--all-campaigns``: the pooled comparison and its notes, then each campaign."""
    out = slot_tables(overview.overall, "All campaigns, pooled")
    out += [Text(f"note: {note}", style="yellow") for note in overview.notes]
    for c in overview.campaigns:
        choice = f", slot_choice {c.slot_choice}" if c.slot_choice else ""
        out += [Text(""), *slot_tables(c, f"Campaign {c.scope}{choice}")]
    return out
