"""``--format json``: stable keys, Decimals as strings (exact), unknown figures as null."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from daemon.reporting.model import GroupFigures, Report
from daemon.reporting.records import group_record

SCHEMA_VERSION = 1


def _group(g: GroupFigures) -> dict[str, Any]:
    record = group_record(g)
    record["skipped_by_reason"] = dict(sorted(g.deliveries.skipped.items()))
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in record.items()}


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
        "notes": list(report.notes),
    }
    if report.timing:
        data["timing"] = [
            {"slot": b.slot, "from_minutes": b.low, "to_minutes": b.high, "opens": b.opens, "clicks": b.clicks}
            for b in report.timing
        ]
    return data


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), ensure_ascii=False, indent=2) + "\n"
