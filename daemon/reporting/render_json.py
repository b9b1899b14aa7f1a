"""``--format json``: stable keys, Decimals as strings (exact), unknown figures as null; the slot
comparison (``slot_comparison``) in plain numbers (``topslot.reporting.slot_records``)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from topslot.reporting.model import GroupFigures, Report
from topslot.reporting.numbers import exact
from topslot.reporting.records import HOW_COMPUTED, group_record
from topslot.reporting.slot_records import comparison_dict, overview_dict
from topslot.reporting.slots import SlotOverview

SCHEMA_VERSION = 1


def _group(g: GroupFigures) -> dict[str, Any]:
    record = group_record(g)
    record["skipped_by_reason"] = dict(sorted(g.deliveries.skipped.items()))
    return {k: (exact(v) if isinstance(v, Decimal) else v) for k, v in record.items()}


def report_dict(report: Report) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "campaign_id": report.campaign_id,
        "campaign_name": report.campaign_name,
        "by": report.by,
        "currency": report.currency,
        "generated_at": report.generated_at.isoformat(),
        "holdout_window": {"start": report.window[0].isoformat(), "end": report.window[1].isoformat()},
        "groups": [_group(g) for g in report.groups],
        "total": _group(report.total),
        "how_computed": dict(HOW_COMPUTED),
        "notes": list(report.notes),
    }
    if report.slots is not None:
        data["slot_comparison"] = comparison_dict(report.slots)
    if report.timing:
        data["timing"] = [
            {"slot": b.slot, "from_minutes": b.low, "to_minutes": b.high, "opens": b.opens, "clicks": b.clicks}
            for b in report.timing
        ]
    return data


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), ensure_ascii=False, indent=2) + "\n"


def render_slots_json(report: Report) -> str:
    """``--slots``: the slot comparison alone, under the report's identity."""
    data = {
        "schema_version": SCHEMA_VERSION,
        "campaign_id": report.campaign_id,
        "campaign_name": report.campaign_name,
        "generated_at": report.generated_at.isoformat(),
        "slot_comparison": comparison_dict(report.slots) if report.slots is not None else None,
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def render_overview_json(overview: SlotOverview) -> str:
    """``--all-campaigns``: the pooled comparison (``overall``) and each campaign's."""
    data = {"schema_version": SCHEMA_VERSION, **overview_dict(overview)}
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"
