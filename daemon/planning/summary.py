"""What ``topslot plan`` shows: a summary per bucket, and one JSON line per planned delivery.

Both are pure and streaming: the summary builder keeps one counter per bucket, never the rows.
Dispatch starts depend on bucket sizes, so ``--json`` takes two passes over the (deterministic)
plan: the first counts buckets, the second writes lines.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from daemon.planning.dispatch import (
    DEFAULT_FLOOR,
    DEFAULT_HEADROOM,
    Bucket,
    DispatchWarning,
    DispatchWindow,
    dispatch_windows,
    human_seconds,
)

LEFT_OUT_LABELS = {
    "no_consent": "no consent",
    "no_address": "no address for the channel",
    "suppressed": "suppressed",
    "holiday": "holiday",
    "weekend": "weekend",
    "day_not_listed": "day not in the campaign's days",
    "missed_slot": "missed slot",
    "no_channel": "no eligible channel",
    "coupon_exhausted": "coupons exhausted",
    "holdout": "holdout",
}


def iso_utc(instant: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: ``2027-05-05T23:30:00Z``."""
    return instant.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


@dataclass(frozen=True, slots=True)
class BucketSummary:
    """One local slot in one zone: who gets it, per channel, and when their bucket starts."""

    slot_date: date
    slot: str
    timezone: str
    due_utc: datetime
    local_time: datetime
    recipients: dict[str, int]  # channel → planned deliveries
    missed: dict[str, int]  # channel → skipped because the slot was missed
    late: dict[str, int]  # channel → planned but already due (sent at once, inside the grace)
    dispatch_start_utc: dict[str, datetime]  # channel → start of its (due_utc, channel) bucket


@dataclass(frozen=True, slots=True)
class PlanSummary:
    buckets: list[BucketSummary]
    windows: list[DispatchWindow]
    left_out: dict[str, int]
    warnings: list[DispatchWarning] = field(default_factory=list)

    @property
    def planned_by_channel(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for bucket in self.buckets:
            total.update(bucket.recipients)
        return dict(total)


class PlanSummaryBuilder:
    """Feed it ledger rows (``add``/``add_all``); ``build`` turns the counts into a PlanSummary."""

    def __init__(self) -> None:
        self._slots: dict[tuple[datetime, date, str, str], dict[str, Any]] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        key = (row["due_utc"], row["slot_date"], row["slot"], row["timezone"])
        entry = self._slots.get(key)
        if entry is None:
            entry = {"local_time": row["local_time"], "planned": Counter(), "missed": Counter(), "late": Counter()}
            self._slots[key] = entry
        channel = row["channel"]
        if row["state"] == "planned":
            entry["planned"][channel] += 1
            if row.get("late"):
                entry["late"][channel] += 1
        elif row.get("skip_reason", "missed_slot") == "missed_slot":  # holdout rows are counted in left_out
            entry["missed"][channel] += 1

    def add_all(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        """Count rows while passing them on (so the store can write them in the same pass)."""
        for row in rows:
            self.add(row)
            yield row

    def buckets(self) -> list[Bucket]:
        """(due_utc, channel) buckets with their sizes, labelled by their largest local slot."""
        sizes: Counter[tuple[datetime, str]] = Counter()
        biggest: dict[tuple[datetime, str], tuple[int, str]] = {}
        zones: defaultdict[tuple[datetime, str], set[str]] = defaultdict(set)
        for (due, slot_date, slot, zone), entry in self._slots.items():
            for channel, count in entry["planned"].items():
                key = (due, channel)
                sizes[key] += count
                zones[key].add(zone)
                label = f"{slot_date.isoformat()} {slot} {zone}"
                if count > biggest.get(key, (0, ""))[0]:
                    biggest[key] = (count, label)
        result = []
        for (due, channel), count in sizes.items():
            label = biggest[(due, channel)][1]
            others = len(zones[(due, channel)]) - 1
            if others:
                label += f" (+{others} more zone{'s' if others > 1 else ''})"
            result.append(Bucket(due_utc=due, channel=channel, count=count, label=label))
        return result

    def build(
        self,
        rate_per_s: float | Mapping[str, float],
        arrive_within: timedelta,
        *,
        left_out: Mapping[str, int] | None = None,
        now: datetime | None = None,
        headroom: float = DEFAULT_HEADROOM,
        floor: timedelta = DEFAULT_FLOOR,
    ) -> PlanSummary:
        windows = dispatch_windows(self.buckets(), rate_per_s, arrive_within, headroom=headroom, floor=floor, now=now)
        starts = {(w.due_utc, w.channel): w.start_utc for w in windows}
        buckets = [
            BucketSummary(
                slot_date=slot_date,
                slot=slot,
                timezone=zone,
                due_utc=due,
                local_time=entry["local_time"],
                recipients=dict(entry["planned"]),
                missed=dict(entry["missed"]),
                late=dict(entry["late"]),
                dispatch_start_utc={ch: starts[(due, ch)] for ch in entry["planned"] if (due, ch) in starts},
            )
            for (due, slot_date, slot, zone), entry in sorted(self._slots.items(), key=lambda kv: kv[0])
        ]
        return PlanSummary(
            buckets=buckets,
            windows=windows,
            left_out={k: v for k, v in (left_out or {}).items() if v},
            warnings=[w.warning for w in windows if w.warning is not None],
        )


def dispatch_starts(windows: Iterable[DispatchWindow]) -> dict[tuple[datetime, str], datetime]:
    """(due_utc, channel) → dispatch start, for ``jsonl_lines``."""
    return {(w.due_utc, w.channel): w.start_utc for w in windows}


def summary_lines(summary: PlanSummary, *, channels: Iterable[str] | None = None) -> list[str]:
    """The plain-text summary ``topslot plan`` prints: one line per local slot, then left-outs and warnings."""
    channel_list = list(channels) if channels is not None else sorted(summary.planned_by_channel)
    lines: list[str] = []
    for b in summary.buckets:
        counts = ", ".join(f"{ch} {b.recipients.get(ch, 0):,}" for ch in channel_list)
        starts = sorted(set(b.dispatch_start_utc.values()))
        start = iso_utc(starts[0]) if starts else "-"
        extra = []
        if b.missed:
            extra.append("missed " + ", ".join(f"{ch} {n:,}" for ch, n in sorted(b.missed.items())))
        if b.late:
            extra.append("late (sent at once) " + ", ".join(f"{ch} {n:,}" for ch, n in sorted(b.late.items())))
        lines.append(
            f"{b.slot_date.isoformat()} {b.slot} {b.timezone} ({b.local_time.strftime('%z')})"
            f" = {iso_utc(b.due_utc)}, dispatch from {start}: {counts}" + (f"; {'; '.join(extra)}" if extra else "")
        )
    total = summary.planned_by_channel
    lines.append("planned: " + (", ".join(f"{ch} {total.get(ch, 0):,}" for ch in channel_list) or "nothing"))
    if summary.left_out:
        lines.append(
            "left out: " + ", ".join(f"{LEFT_OUT_LABELS.get(k, k)} {v:,}" for k, v in sorted(summary.left_out.items()))
        )
    for warning in summary.warnings:
        lines.append(f"warning: {warning.message()}")
    return lines


def jsonl_record(row: Mapping[str, Any], dispatch_start_utc: datetime | None) -> dict[str, Any]:
    """The ``topslot plan --json`` object for one ledger row."""
    return {
        "contact_id": row["contact_id"],
        "channel": row["channel"],
        "slot_date": row["slot_date"].isoformat(),
        "slot": row["slot"],
        "local_time": row["local_time"].isoformat(),
        "due_utc": iso_utc(row["due_utc"]),
        "timezone": row["timezone"],
        "tz_source": row["tz_source"],
        "dispatch_start_utc": iso_utc(dispatch_start_utc) if dispatch_start_utc is not None else None,
        "state": row["state"],
        **({"skip_reason": row["skip_reason"]} if row["state"] != "planned" else {}),
    }


def jsonl_lines(
    rows: Iterable[Mapping[str, Any]],
    starts: Mapping[tuple[datetime, str], datetime],
    *,
    include_skipped: bool = False,
) -> Iterator[str]:
    """One JSON object per planned delivery per line (skipped rows too when asked)."""
    for row in rows:
        if row["state"] != "planned" and not include_skipped:
            continue
        record = jsonl_record(row, starts.get((row["due_utc"], row["channel"])))
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)


__all__ = [
    "BucketSummary",
    "PlanSummary",
    "PlanSummaryBuilder",
    "dispatch_starts",
    "human_seconds",
    "iso_utc",
    "jsonl_lines",
    "jsonl_record",
    "summary_lines",
]
