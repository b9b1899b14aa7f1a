"""The slot comparison as rich tables: per kind of evidence, one row per slot with each figure and
its 95 % interval (transposed, one row per figure and a column per slot, when that does not fit the
console's width), then the verdicts (and the caveat of observational rows)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from topslot.reporting.render_fit import FigureTable, table_width
from topslot.reporting.slot_records import display_interval
from topslot.reporting.slots import METRICS, EvidenceComparison, SlotComparison, SlotOverview

RECIPIENTS = "recipients"


@dataclass(frozen=True)
class SlotTable:
    """One kind of evidence: a row per slot when it fits the width, else a row per figure."""

    group: EvidenceComparison

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        title = f"Slots: {self.group.label}"
        headers = ["slot", RECIPIENTS, *(m.label for m in METRICS)]
        rows = [
            [s.slot, f"{s.counts.recipients:,}", *(display_interval(s.figures[m.key], m.rate) for m in METRICS)]
            for s in self.group.slots
        ]
        widths = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(headers)]
        if table_width(widths[1:], widths[0]) <= options.max_width:
            table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
            table.add_column("slot", no_wrap=True)
            for h in headers[1:]:
                table.add_column(h, justify="right")
            for row in rows:
                table.add_row(Text(row[0]), *row[1:])
            yield table
            return
        by_figure = [(h, [r[i] for r in rows]) for i, h in enumerate(headers) if i]
        yield FigureTable([r[0] for r in rows], [(title, by_figure)])


def slot_tables(comparison: SlotComparison | None, title: str = "Slot comparison") -> list[RenderableType]:
    if comparison is None:
        return []
    heading = f"{title} (95 % intervals; revenue in {comparison.currency})"
    out: list[RenderableType] = [Text(heading, style="bold")]
    if comparison.summary:
        return [*out, Text(comparison.summary)]
    out += [Text(f"note: {note}", style="yellow") for note in comparison.notes]
    for group in comparison.groups:
        out.append(SlotTable(group))
        if group.caveat:
            out.append(Text(group.caveat, style="yellow"))
        for line in [group.summary] if group.summary else [d.verdict for d in group.differences]:
            out.append(Padding(Text(line), (0, 0, 0, 2)))  # wrapped lines stay indented
    return out


def overview_tables(overview: SlotOverview) -> list[RenderableType]:
    """``--all-campaigns``: the pooled comparison and its notes, then each campaign."""
    out = slot_tables(overview.overall, "All campaigns, pooled")
    out += [Text(f"note: {note}", style="yellow") for note in overview.notes]
    for c in overview.campaigns:
        choice = f", slot_choice {c.slot_choice}" if c.slot_choice else ""
        out += [Text(""), *slot_tables(c, f"Campaign {c.scope}{choice}")]
    return out
