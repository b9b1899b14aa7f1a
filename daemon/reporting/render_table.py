"""``--format table``: rich tables with one row per figure and one column per group and the total,
fitted to the console's width (``topslot.reporting.render_fit``: many groups or long group keys
split into column blocks that repeat the labels), then the "how computed" lines, the slot
comparison and the notes."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from topslot.reporting.model import Report
from topslot.reporting.records import HOW_COMPUTED, SECTIONS, display, group_record
from topslot.reporting.render_fit import FigureTable, Rows
from topslot.reporting.render_slots_table import slot_tables

TOTAL = "total"


def figure_sections(report: Report) -> list[tuple[str, Rows]]:
    """(section title, [(label, one cell per group then the total)]) — the table's and the HTML's."""
    columns = [*report.groups, report.total]
    records = [group_record(g) for g in columns]
    sections: list[tuple[str, Rows]] = []
    for title, rows in SECTIONS:
        body = [(label, [display(key, r[key]) for r in records]) for key, label in rows]
        if title == "Deliveries":
            for reason in sorted({r for g in columns for r in g.deliveries.skipped}):
                body.append((f"  skipped: {reason}", [f"{g.deliveries.skipped.get(reason, 0):,}" for g in columns]))
        sections.append((title, body))
    return sections


def how_computed() -> list[tuple[str, str]]:
    """(figure label, how it is computed) for each money figure."""
    labels = {key: label.strip() for _, rows in SECTIONS for key, label in rows}
    return [(labels[key], text) for key, text in HOW_COMPUTED.items() if key in labels]


def render_table(report: Report) -> Group:
    figures = FigureTable([*(g.key for g in report.groups), TOTAL], figure_sections(report), emphasise_last=True)
    how = Table.grid(padding=(0, 1))
    how.add_column(no_wrap=True, style="dim", justify="right")
    how.add_column(style="dim")
    for label, text in how_computed():
        how.add_row(f"  {label}:", text)
    parts: list[RenderableType] = [
        Text(f"{report.campaign_name} ({report.campaign_id}) by {report.by}, money in {report.currency}", style="bold"),
        figures,
        Text("how computed", style="dim"),
        how,
        *slot_tables(report.slots),
    ]
    parts += [Text(f"note: {note}", style="yellow") for note in report.notes]
    return Group(*parts)
