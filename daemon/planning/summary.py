"""What ``topslot plan`` shows: a summary per bucket, and one JSON line per planned delivery.

Both are pure and streaming: the summary builder keeps one counter per bucket, never the rows.
Dispatch starts depend on bucket sizes, so ``--json`` takes two passes over the (deterministic)
plan: the first counts buckets, the second writes lines.

Costs: ``MessageSample`` counts the planned messages of segmented channels (SMS) per (channel,
country) and keeps a deterministic sample of up to ``SAMPLE_PER_COUNTRY`` recipients of each; the
caller renders the sample (``topslot plan``) and ``estimate_costs`` turns the mean segments per
message of each country's sample into the channel's estimated segments and cost. Other channels
cost messages × ``costs.<channel>``. Memory stays bounded: counters and samples, never the rows.
"""

from __future__ import annotations

import heapq
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from topslot.delivery import DeliveryState as S
from topslot.planning.dispatch import (
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
    "quiet_hours": "inside quiet hours",
    "frequency_cap": "frequency cap",
    "low_confidence_zone": "time zone unknown (low_confidence_zone: skip)",
    "earlier_channel": "reached on an earlier channel (first_available)",
    "no_later_slot": "no later slot for the fallback channel",
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
    # channel → (channel it falls back from → planned rows sent only if that one got no human reaction)
    conditional: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlanSummary:
    buckets: list[BucketSummary]
    windows: list[DispatchWindow]
    left_out: dict[str, int]
    warnings: list[DispatchWarning] = field(default_factory=list)
    # channel → tz_source → recipients: how each recipient's zone is known (``fallback``: it is not)
    zone_sources: dict[str, dict[str, int]] = field(default_factory=dict)
    fallback_zone: str | None = None  # the zone ``fallback`` recipients get (None: a fixed campaign zone)
    # channel → slot → SlotBasis → recipients: which slot each recipient got and why (slot_choice)
    slot_bases: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    low_confidence_zone: str = "fallback"  # the campaign's schedule.low_confidence_zone
    frequency_caps: dict[str, str] = field(default_factory=dict)  # channel → the cap in force ("3 per 7d")
    frequency_capped: dict[str, int] = field(default_factory=dict)  # channel → rows the cap left out

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
            entry = {
                "local_time": row["local_time"],
                "planned": Counter(),
                "missed": Counter(),
                "late": Counter(),
                "conditional": Counter(),
            }
            self._slots[key] = entry
        channel = row["channel"]
        if row["state"] == S.PLANNED:
            entry["planned"][channel] += 1
            if row.get("late"):
                entry["late"][channel] += 1
            if row.get("fallback_of"):
                entry["conditional"][(channel, row["fallback_of"])] += 1
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
                conditional=_nested(entry["conditional"]),
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


def summary_lines(
    summary: PlanSummary, *, channels: Iterable[str] | None = None, costs: Iterable[ChannelCost] = ()
) -> list[str]:
    """The plain-text summary ``topslot plan`` prints: one line per local slot, the totals (and, with
    ``costs``, one cost line per channel), then left-outs and warnings."""
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
        for ch, sources in sorted(b.conditional.items()):
            for earlier, n in sorted(sources.items()):
                extra.append(f"{ch} {n:,} only if the {earlier} got no human open or click (fallback)")
        lines.append(
            f"{b.slot_date.isoformat()} {_slot_text(b)} {b.timezone} ({b.local_time.strftime('%z')})"
            f" = {iso_utc(b.due_utc)}, dispatch from {start}: {counts}" + (f"; {'; '.join(extra)}" if extra else "")
        )
    total = summary.planned_by_channel
    lines.append("planned: " + (", ".join(f"{ch} {total.get(ch, 0):,}" for ch in channel_list) or "nothing"))
    lines += cost_lines(costs)
    if summary.left_out:
        lines.append(
            "left out: " + ", ".join(f"{LEFT_OUT_LABELS.get(k, k)} {v:,}" for k, v in sorted(summary.left_out.items()))
        )
    if summary.frequency_caps:
        caps = ", ".join(
            f"{ch} {cap} ({summary.frequency_capped.get(ch, 0):,} left out)"
            for ch, cap in summary.frequency_caps.items()
        )
        lines.append(f"frequency caps: {caps}")
    if summary.zone_sources:
        parts = []
        for ch in channel_list:
            sources = summary.zone_sources.get(ch, {})
            if sources:
                ordered = sorted(sources.items(), key=lambda kv: ZONE_ORDER[kv[0]])
                counts = ", ".join(f"{src} {n:,}" for src, n in ordered)
                parts.append(f"{ch}: {counts}")
        lines.append("time zone from: " + "; ".join(parts))
        for ch in channel_list:
            unknown = summary.zone_sources.get(ch, {}).get("fallback", 0)
            if unknown and summary.fallback_zone:
                planned_in = f"are planned in the fallback zone {summary.fallback_zone}"
                what = {
                    "skip": "are skipped (low_confidence_zone: skip)",
                    "country_center": f"no country either, and {planned_in}",
                }.get(summary.low_confidence_zone, planned_in)
                lines.append(
                    f"warning: {unknown:,} {ch} recipient(s) have no known time zone and {what}: import their "
                    "timezone, a phone number, or a country with one zone"
                )
    lines += slot_lines(summary.slot_bases, channel_list)
    for warning in summary.warnings:
        lines.append(f"warning: {warning.message()}")
    return lines


def _nested(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (outer, inner), n in counts.items():
        nested.setdefault(outer, {})[inner] = n
    return nested


def _slot_text(b: BucketSummary) -> str:
    """The slot, and where quiet hours moved it: ``07:30 → 08:00``."""
    local = b.local_time.strftime("%H:%M")
    if local == b.slot:
        return b.slot
    day = "" if b.local_time.date() == b.slot_date else f" {b.local_time.date().isoformat()}"
    return f"{b.slot} → {local}{day}"


ZONE_ORDER = {"contact": 0, "phone": 1, "country": 2, "country_center": 3, "campaign": 4, "fallback": 5}
"""How ``time zone from`` lists the sources: the surest first."""


def slot_lines(slot_bases: Mapping[str, Mapping[str, Mapping[str, int]]], channels: Iterable[str]) -> list[str]:
    """``slots: email: 07:30 512 (split), 17:00 488 (split)``: recipients per chosen slot and why;
    nothing when no slot was chosen (``slot_choice: first``)."""
    parts = []
    for ch in channels:
        chosen = {slot: bases for slot, bases in slot_bases.get(ch, {}).items() if slot}
        if not chosen:
            continue
        counts = []
        for slot, bases in sorted(chosen.items()):
            why = ", ".join(f"{basis} {n:,}" for basis, n in sorted(bases.items(), key=lambda kv: -kv[1]))
            counts.append(f"{slot} {sum(bases.values()):,} ({why})")
        parts.append(f"{ch}: " + ", ".join(counts))
    return ["slots: " + "; ".join(parts)] if parts else []


# ---------------------------------------------------------------- costs and segments

SAMPLE_PER_COUNTRY = 100  # recipients rendered per (channel, country) to estimate segments
MAX_COUNTRIES_SHOWN = 12  # per-country means on a cost line
NO_COUNTRY = "-"
_MIX = 0x9E3779B97F4A7C15  # Fibonacci hashing: a well-spread 64-bit sample key from an integer id
_MASK = 2**64 - 1


class MessageSample:
    """Planned messages of ``channels`` counted per (channel, country), and a deterministic sample of up
    to ``per_group`` recipients of each group: the ones whose mixed contact id is smallest, so the
    same plan always samples the same recipients, spread over the id range (bounded memory)."""

    def __init__(self, channels: Iterable[str], per_group: int = SAMPLE_PER_COUNTRY):
        self.channels = frozenset(channels)
        self.per_group = per_group
        self.counts: Counter[tuple[str, str]] = Counter()
        self._heaps: dict[tuple[str, str], list[tuple[int, Any]]] = {}  # (-mix, contact id): a max-heap
        self._members: dict[tuple[str, str], set[Any]] = {}

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Count a batch of ledger rows (planned ones of the sampled channels); ``rows_out`` of a plan."""
        for row in rows:
            if row["state"] != S.PLANNED or row["channel"] not in self.channels:
                continue
            group = (row["channel"], row.get("country") or NO_COUNTRY)
            self.counts[group] += 1
            contact_id = row["contact_id"]
            members = self._members.setdefault(group, set())
            if contact_id in members:
                continue
            heap = self._heaps.setdefault(group, [])
            key = -_mix(contact_id)
            if len(heap) < self.per_group:
                heapq.heappush(heap, (key, contact_id))
                members.add(contact_id)
            elif key > heap[0][0]:
                _, dropped = heapq.heapreplace(heap, (key, contact_id))
                members.discard(dropped)
                members.add(contact_id)

    def groups(self) -> dict[tuple[str, str], list[Any]]:
        """(channel, country) → the sampled contact ids, in id order."""
        return {group: sorted(members) for group, members in sorted(self._members.items())}

    def contact_ids(self) -> set[Any]:
        return set().union(*self._members.values()) if self._members else set()


def _mix(contact_id: Any) -> int:
    if isinstance(contact_id, int):
        return (contact_id * _MIX) & _MASK
    return zlib.crc32(str(contact_id).encode("utf-8"))


@dataclass(frozen=True, slots=True)
class ChannelCost:
    """What one channel of the plan costs: messages × ``costs.<channel>``; for a segmented channel
    (SMS, ``unit_cost`` per segment) the estimated segments × ``unit_cost``."""

    channel: str
    messages: int
    unit_cost: Decimal
    currency: str
    segments: Decimal | None = None  # estimated segments in all (segmented channels)
    per_message: dict[str, Decimal] = field(default_factory=dict)  # country → mean segments of its sample
    sampled: int = 0  # recipients rendered for the estimate
    unestimated: int = 0  # messages of countries whose sample could not be rendered

    @property
    def segmented(self) -> bool:
        return self.segments is not None

    @property
    def cost(self) -> Decimal:
        return (self.segments if self.segments is not None else Decimal(self.messages)) * self.unit_cost

    def row_fields(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``est_segments`` / ``est_cost`` of one planned message of this channel (--json)."""
        if self.segments is None:
            return {"cost": float(self.unit_cost)}
        mean = self.per_message.get(row.get("country") or NO_COUNTRY)
        if mean is None:
            return {"est_segments": None, "est_cost": None}
        return {"est_segments": float(mean), "est_cost": float(_round(mean * self.unit_cost, 6))}


def estimate_costs(
    planned: Mapping[str, int],
    unit_costs: Mapping[str, Decimal],
    currency: str,
    sample: MessageSample | None = None,
    segments: Mapping[tuple[str, str], Sequence[int]] | None = None,
) -> list[ChannelCost]:
    """Per channel of ``planned`` (channel → messages): its cost. ``segments``: (channel, country) →
    the segment counts of that group's rendered sample; a segmented channel's estimate is Σ over its
    countries of messages × mean segments (a country with no rendered sample is left out and counted
    in ``unestimated``)."""
    out = []
    rendered = segments or {}
    for channel, messages in planned.items():
        unit = unit_costs.get(channel, Decimal(0))
        if sample is None or channel not in sample.channels:
            out.append(ChannelCost(channel, messages, unit, currency))
            continue
        total, sampled, unestimated = Decimal(0), 0, 0
        per_message: dict[str, Decimal] = {}
        for (ch, country), count in sorted(sample.counts.items()):
            if ch != channel:
                continue
            counts = rendered.get((ch, country)) or ()
            if not counts:
                unestimated += count
                continue
            mean = _round(Decimal(sum(counts)) / len(counts), 2)
            per_message[country] = mean
            total += mean * count
            sampled += len(counts)
        out.append(ChannelCost(channel, messages, unit, currency, total, per_message, sampled, unestimated))
    return out


def cost_lines(costs: Iterable[ChannelCost]) -> list[str]:
    """``cost: ...`` lines for ``topslot plan``, one per channel."""
    lines = []
    for c in costs:
        if c.segments is None:
            lines.append(
                f"cost {c.channel}: {c.messages:,} message(s) × {c.unit_cost:f} {c.currency}"
                f" = {_money(c.cost)} {c.currency}"
            )
            continue
        shown = list(c.per_message.items())[:MAX_COUNTRIES_SHOWN]
        per = ", ".join(f"{country} {mean:f}" for country, mean in shown)
        if len(c.per_message) > len(shown):
            per += f", +{len(c.per_message) - len(shown)} more (see --json)"
        note = f"; {c.unestimated:,} message(s) not estimated" if c.unestimated else ""
        lines.append(
            f"cost {c.channel}: {c.messages:,} message(s), ~{_round(c.segments, 0):,f} segment(s) (estimated from"
            f" {c.sampled:,} rendered; per message: {per or 'none'}{note}) × {c.unit_cost:f} {c.currency}"
            f" = ~{_money(c.cost)} {c.currency}"
        )
    return lines


def _round(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _money(value: Decimal) -> str:
    return f"{_round(value, 2):,f}"


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
        **({"skip_reason": row["skip_reason"]} if row["state"] != S.PLANNED else {}),
        **({"slot_basis": row["slot_basis"]} if row.get("slot_basis") else {}),
        **({"fallback_of": row["fallback_of"]} if row.get("fallback_of") else {}),
    }


def jsonl_lines(
    rows: Iterable[Mapping[str, Any]],
    starts: Mapping[tuple[datetime, str], datetime],
    *,
    include_skipped: bool = False,
    costs: Iterable[ChannelCost] = (),
) -> Iterator[str]:
    """One JSON object per planned delivery per line (skipped rows too when asked); with ``costs``,
    a planned message also carries its ``cost`` (or, segmented, ``est_segments`` and ``est_cost``)."""
    extra: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {c.channel: c.row_fields for c in costs}
    for row in rows:
        if row["state"] != S.PLANNED and not include_skipped:
            continue
        record = jsonl_record(row, starts.get((row["due_utc"], row["channel"])))
        fields = extra.get(row["channel"]) if row["state"] == S.PLANNED else None
        if fields is not None:
            record.update(fields(row))
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)


__all__ = [
    "BucketSummary",
    "ChannelCost",
    "MessageSample",
    "PlanSummary",
    "PlanSummaryBuilder",
    "cost_lines",
    "dispatch_starts",
    "estimate_costs",
    "human_seconds",
    "iso_utc",
    "jsonl_lines",
    "jsonl_record",
    "summary_lines",
]
