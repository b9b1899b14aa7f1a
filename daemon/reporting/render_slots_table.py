"""The slot comparison as rich tables: per kind of evidence, one row per slot with each figure and
its 95 % interval, then the verdicts (and the caveat of observational rows)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from daemon.reporting.slot_records import display_interval
from daemon.reporting.slots import METRICS, SlotComparison


def slot_tables(comparison: SlotComparison | None) -> list[Table | Text]:
    if comparison is None:
        return []
    heading = f"Slot comparison (95 % intervals; revenue in {comparison.currency})"
    out: list[Table | Text] = [Text(heading, style="bold")]
    if comparison.summary:
        return [*out, Text(comparison.summary)]
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
