"""The slot comparison as records with stable keys (JSON, CSV) and as display text (table, HTML).

JSON and CSV carry numbers: rates as fractions (0.3 is 30 %), money in the report's currency, every
float rounded to 6 places; unknown is ``null`` (CSV: empty)."""

from __future__ import annotations

from typing import Any

from topslot.reporting.numbers import fixed, money, percent
from topslot.reporting.slots import (
    CONFIDENCE,
    METRICS,
    Difference,
    EvidenceComparison,
    SlotComparison,
    SlotFigures,
    SlotOverview,
)
from topslot.reporting.stats import Interval

FIELDS = {
    "opens": "open_rate",
    "clicks": "click_rate",
    "conversions": "conversion_rate",
    "revenue": "revenue_per_recipient",
}
PLACES = 6


def _number(value: float | None) -> float | None:
    return None if value is None else round(value, PLACES) + 0.0  # + 0.0: never -0.0


def interval_dict(interval: Interval | None) -> dict[str, float | None] | None:
    if interval is None:
        return None
    return {"estimate": _number(interval.estimate), "low": _number(interval.low), "high": _number(interval.high)}


def slot_dict(s: SlotFigures) -> dict[str, Any]:
    c = s.counts
    record: dict[str, Any] = {
        "slot": s.slot,
        "recipients": c.recipients,
        "open_recipients": c.open_recipients,
        "opened": c.opened,
        "clicked": c.clicked,
        "converted": c.converted,
        "net_revenue": float(s.net_revenue),
    }
    for metric in METRICS:
        record[FIELDS[metric.key]] = interval_dict(s.figures[metric.key])
    return record


def difference_dict(d: Difference) -> dict[str, Any]:
    i = d.interval
    return {
        "metric": FIELDS[d.metric],
        "leader": d.leader,
        "other": d.other,
        "outcome": d.outcome,
        "difference": _number(i.estimate) if i else None,  # leader − other
        "low": _number(i.low) if i else None,
        "high": _number(i.high) if i else None,
        "verdict": d.verdict,
    }


def comparison_dict(c: SlotComparison) -> dict[str, Any]:
    return {
        "scope": c.scope,
        "slot_choice": c.slot_choice,
        "currency": c.currency,
        "confidence": CONFIDENCE,
        "min_recipients": c.min_recipients,
        "summary": c.summary,
        "notes": c.notes,
        "evidence": [
            {
                "evidence": g.evidence,
                "label": g.label,
                "caveat": g.caveat,
                "summary": g.summary,
                "slots": [slot_dict(s) for s in g.slots],
                "differences": [difference_dict(d) for d in g.differences],
            }
            for g in c.groups
        ],
    }


def csv_header() -> list[str]:
    head = ["campaign_id", "slot_choice", "evidence", "slot", "recipients", "open_recipients", "opened", "clicked",
            "converted", "net_revenue"]  # fmt: skip
    for metric in METRICS:
        f = FIELDS[metric.key]
        head += [f, f"{f}_low", f"{f}_high"]
    for metric in METRICS:
        f = FIELDS[metric.key]
        head += [f"{f}_leader", f"{f}_diff", f"{f}_diff_low", f"{f}_diff_high", f"{f}_outcome"]
    return [*head, "currency"]


def csv_rows(c: SlotComparison) -> list[dict[str, Any]]:
    """One row per evidence × slot; each figure against its leader (``leader`` on the leader's row)."""
    rows = []
    for g in c.groups:
        for s in g.slots:
            record = slot_dict(s)
            row: dict[str, Any] = {"campaign_id": c.scope, "slot_choice": c.slot_choice, "evidence": g.evidence}
            row.update({k: record[k] for k in ("slot", "recipients", "open_recipients", "opened", "clicked",
                                                 "converted", "net_revenue")})  # fmt: skip
            for metric in METRICS:
                f, i = FIELDS[metric.key], s.figures[metric.key]
                row.update({f: _number(i.estimate) if i else None, f"{f}_low": _number(i.low) if i else None,
                            f"{f}_high": _number(i.high) if i else None})  # fmt: skip
            for metric in METRICS:
                row.update(_against_leader(FIELDS[metric.key], metric.key, s.slot, g))
            row["currency"] = c.currency
            rows.append(row)
    return rows


def _against_leader(f: str, metric: str, slot: str, g: EvidenceComparison) -> dict[str, Any]:
    mine = [d for d in g.differences if d.metric == metric]
    out: dict[str, Any] = dict.fromkeys((f"{f}_leader", f"{f}_diff", f"{f}_diff_low", f"{f}_diff_high", f"{f}_outcome"))
    found = next((d for d in mine if d.other == slot and d.outcome != "not_tracked"), None)
    if any(d.outcome == "not_tracked" for d in mine):
        out[f"{f}_outcome"] = "not_tracked"
    elif found is not None:
        i = found.interval
        out.update({f"{f}_leader": found.leader, f"{f}_outcome": found.outcome})
        if i is not None:
            out.update(
                {f"{f}_diff": _number(i.estimate), f"{f}_diff_low": _number(i.low), f"{f}_diff_high": _number(i.high)}
            )
    elif mine and mine[0].leader == slot:
        out.update({f"{f}_leader": slot, f"{f}_outcome": "leader"})
    return out


def display_interval(interval: Interval | None, rate: bool) -> str:
    """'38.0% (29.1–47.8)' for a rate, '2.22 (1.10–3.34)' for money; 'n/a' when unknown."""
    if interval is None:
        return "n/a"
    if rate:
        return f"{percent(interval.estimate)} ({fixed(interval.low * 100, 1)}–{fixed(interval.high * 100, 1)})"
    return f"{money(interval.estimate)} ({money(interval.low)}–{money(interval.high)})".replace("-", "−")


def overview_dict(o: SlotOverview) -> dict[str, Any]:
    return {
        "generated_at": o.generated_at.isoformat(),
        "overall": comparison_dict(o.overall),
        "campaigns": [comparison_dict(c) for c in o.campaigns],
        "notes": list(o.notes),
    }
