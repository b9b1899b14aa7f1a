"""``--format table``: rich tables with one column per group and the total, one row per figure."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from daemon.reporting.model import Report
from daemon.reporting.records import HOW_COMPUTED, SECTIONS, display, group_record
from daemon.reporting.render_slots_table import slot_tables


def render_table(report: Report) -> Group:
    columns = [*report.groups, report.total]
    records = [group_record(g) for g in columns]
    tables: list[Table | Text] = [
        Text(f"{report.campaign_name} ({report.campaign_id}) by {report.by}, money in {report.currency}", style="bold")
    ]
    for title, rows in SECTIONS:
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("", no_wrap=True)
        for g in columns:
            table.add_column(Text(g.key) if g is not report.total else Text("total", style="bold"), justify="right")
        for key, label in rows:
            table.add_row(label, *(display(key, r[key]) for r in records))
        if title == "Deliveries":
            reasons = sorted({r for g in columns for r in g.deliveries.skipped})
            for reason in reasons:
                table.add_row(f"  skipped: {reason}", *(f"{g.deliveries.skipped.get(reason, 0):,}" for g in columns))
        tables.append(table)
        if title == "Sales and ROI":
            labels = dict(rows)
            how = [f"  {labels[key].strip()}: {text}" for key, text in HOW_COMPUTED.items() if key in labels]
            tables.append(Text("how computed\n" + "\n".join(how), style="dim"))
    tables.extend(slot_tables(report.slots))
    for note in report.notes:
        tables.append(Text(f"note: {note}", style="yellow"))
    return Group(*tables)
