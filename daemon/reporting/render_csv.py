"""``--format csv``: one row per group, then the campaign total (``by`` = ``all``, group ``total``).

Columns are stable: every known skip reason has its ``skipped_<reason>`` column. Decimals are
written exactly; unknown figures are empty. ``render_slots_csv``: the slot comparison instead, one
row per campaign × evidence × slot. Cells that a spreadsheet would run as a formula
(starting with = + - @) are prefixed with a quote (group names come from data)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from topslot.reporting.model import Report
from topslot.reporting.numbers import exact, unsigned
from topslot.reporting.records import group_record, skip_reasons
from topslot.reporting.slot_records import csv_header, csv_rows
from topslot.reporting.slots import SlotComparison, SlotOverview

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return exact(value)
    if isinstance(value, float):
        return str(unsigned(value))
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return str(value)


def render_csv(report: Report) -> str:
    reasons = skip_reasons(report)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header: list[str] | None = None
    rows = [(report.by, g) for g in report.groups] + [("all", report.total)]
    for by, g in rows:
        record = {"campaign_id": report.campaign_id, "by": by, **group_record(g, reasons), "currency": report.currency}
        if header is None:
            header = list(record)
            writer.writerow(header)
        writer.writerow([_cell(record[k]) for k in header])
    return buffer.getvalue()


def render_slots_csv(report: Report) -> str:
    """The slot comparison: one row per evidence × slot (a header alone when nothing was sent)."""
    return _slots_csv([report.slots] if report.slots is not None else [])


def render_overview_csv(overview: SlotOverview) -> str:
    """``--all-campaigns``: the pooled rows (campaign ``(all campaigns)``), then each campaign's."""
    return _slots_csv([overview.overall, *overview.campaigns])


def _slots_csv(comparisons: list[SlotComparison]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = csv_header()
    writer.writerow(header)
    for comparison in comparisons:
        for row in csv_rows(comparison):
            writer.writerow([_cell(row[k]) for k in header])
    return buffer.getvalue()
