"""The slot comparison (pure): per slot, four figures with 95 % intervals, and a verdict in plain
words for each slot against the leader, kept apart by evidence (docs/reporting.md, "Slot comparison").

Figures per slot (the base is the slot's recipients: ledger rows handed over):
- ``opens``: human open rate = recipients opened by a person ÷ recipients on channels that track
  opens (email; SMS and IM have no pixel), Wilson interval;
- ``clicks``: click rate = recipients with a human click ÷ recipients, Wilson;
- ``conversions``: conversion rate = recipients with an order credited by coupon or click ÷
  recipients, Wilson;
- ``revenue``: revenue per recipient = net revenue credited to the slot's recipients ÷ recipients,
  a normal interval from the per-recipient variance.

The verdict rule, per figure and evidence: the **leader** is the slot with the highest estimate
(the earlier slot on a tie) among slots with at least ``MIN_RECIPIENTS`` in the figure's base (or
among all, when none has). Every other slot is compared with it: leader − other, Newcombe's
interval for rates, Welch's for revenue. An interval that excludes zero says "A beats B on clicks by
2.1 points (95 % CI 0.8–3.4)"; one that straddles zero says "no significant difference"; a base
below ``MIN_RECIPIENTS`` on either side says "too few recipients to compare". With two slots that
is simply better minus worse. No correction for several comparisons is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from topslot.reporting.numbers import fixed, money
from topslot.reporting.stats import Interval, mean_interval, newcombe, welch, wilson

MIN_RECIPIENTS = 30  # per slot and figure: below this, no verdict
CONFIDENCE = 0.95
EVIDENCE = ("randomised", "observational")  # display order


@dataclass(frozen=True)
class SlotCounts:
    """One slot's recipients under one kind of evidence, and what they did."""

    slot: str
    evidence: str  # randomised | observational
    recipients: int = 0
    open_recipients: int = 0  # recipients on channels that track opens (email): the open rate's base
    opened: int = 0  # of ``open_recipients``: opened by a person (open or click)
    clicked: int = 0
    converted: int = 0  # recipients with an attributed order
    net_cents: int = 0  # Σ net revenue per recipient, cents
    net_squares: int = 0  # Σ (net revenue per recipient in cents)²


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # column heading
    noun: str  # in a verdict: "... on clicks by ..."
    rate: bool  # a proportion (Wilson/Newcombe, shown in points) or money per recipient (normal/Welch)


METRICS = (
    Metric("opens", "human open rate", "opens", True),
    Metric("clicks", "click rate", "clicks", True),
    Metric("conversions", "conversion rate", "conversions", True),
    Metric("revenue", "revenue per recipient", "revenue per recipient", False),
)
EVIDENCE_LABELS = {"randomised": "randomised (causal)", "observational": "observational"}
CAVEATS = {
    "randomised": None,
    "observational": "Observational: these slots were not assigned at random (slot basis first, history or "
    "default), so the recipients of each slot differ in more than the time; read differences as "
    "associations, not as the effect of the slot.",
}


@dataclass(frozen=True)
class SlotFigures:
    counts: SlotCounts
    figures: dict[str, Interval | None]  # per metric key; None: no base (or one recipient, for revenue)

    @property
    def slot(self) -> str:
        return self.counts.slot

    @property
    def net_revenue(self) -> Decimal:
        return Decimal(self.counts.net_cents) / 100

    def base(self, metric: str) -> int:
        return self.counts.open_recipients if metric == "opens" else self.counts.recipients


@dataclass(frozen=True)
class Difference:
    """leader − other on one figure."""

    metric: str
    leader: str
    other: str
    outcome: str  # better | no_difference | too_few | not_tracked
    interval: Interval | None  # None when too few or not tracked
    verdict: str


@dataclass(frozen=True)
class EvidenceComparison:
    evidence: str  # randomised | observational
    slots: list[SlotFigures]
    differences: list[Difference]
    summary: str | None = None  # instead of differences: why there is nothing to compare

    @property
    def label(self) -> str:
        return EVIDENCE_LABELS[self.evidence]

    @property
    def caveat(self) -> str | None:
        return CAVEATS[self.evidence]


@dataclass(frozen=True)
class SlotComparison:
    scope: str  # the campaign id
    slot_choice: str | None  # the campaign's (first | split | learned); None: its file is not loaded
    currency: str
    groups: list[EvidenceComparison] = field(default_factory=list)  # randomised first; only those sent to
    min_recipients: int = MIN_RECIPIENTS

    @property
    def summary(self) -> str | None:
        """The sentence shown instead of the comparison when nothing was sent."""
        return None if self.groups else "Nothing has been sent yet: no slots to compare."

    @property
    def notes(self) -> list[str]:
        """A randomising campaign whose recipients have no randomised slot basis: nothing is causal."""
        if self.slot_choice in ("split", "learned") and self.groups:
            if not any(g.evidence == "randomised" for g in self.groups):
                return [
                    f"slot_choice is {self.slot_choice}, but no recipient has a randomised slot basis (split or "
                    "exploration) yet: nothing here is causal evidence"
                ]
        return []


ALL_CAMPAIGNS = "(all campaigns)"  # the scope of the pooled comparison (no campaign id has brackets)
POOLING_CAVEAT = (
    "Pooled: each campaign's recipients summed per slot, from the campaigns that sent to two slots or more "
    "under that kind of evidence. Randomised rows stay a fair comparison only if every campaign split its "
    "recipients between the slots in like proportions; read the campaigns too."
)


@dataclass(frozen=True)
class SlotOverview:
    """The slot comparison of several campaigns, then of all of them pooled (``ALL_CAMPAIGNS``)."""

    generated_at: datetime
    overall: SlotComparison
    campaigns: list[SlotComparison]
    notes: list[str] = field(default_factory=list)


def overview(
    per_campaign: Sequence[tuple[str, str, str | None, Sequence[SlotCounts]]], generated_at: datetime
) -> SlotOverview:
    """From (campaign id, currency, slot_choice, counts) per campaign. The pooled comparison sums, per
    kind of evidence, the campaigns that sent to two slots or more under it (``_comparable``); revenue
    is pooled only when every campaign has the same currency."""
    currencies = sorted({currency for _, currency, _, _ in per_campaign})
    same = len(currencies) <= 1
    notes = [POOLING_CAVEAT]
    if not same:
        notes.append(f"campaigns in several currencies ({', '.join(currencies)}): revenue is not pooled")
    overall = compare(
        pool(c for *_, counts in per_campaign for c in _comparable(counts)),
        ALL_CAMPAIGNS,
        currencies[0] if same and currencies else "mixed",
        revenue=same,
    )
    campaigns = [compare(counts, cid, currency, choice) for cid, currency, choice, counts in per_campaign]
    return SlotOverview(generated_at, overall, campaigns, notes)


def _comparable(counts: Sequence[SlotCounts]) -> list[SlotCounts]:
    """A campaign's counts of the kinds of evidence where it sent to two slots or more: one slot alone
    compares nothing and would only tilt the pooled figures towards its audience."""
    sent = [c for c in counts if c.recipients]
    slots = {e: {c.slot for c in sent if c.evidence == e} for e in EVIDENCE}
    return [c for c in sent if len(slots[c.evidence]) > 1]


def _money_moments(c: SlotCounts) -> tuple[int, float, float]:
    """(n, Σx, Σx²) of the net revenue per recipient, in currency units."""
    return c.recipients, c.net_cents / 100, c.net_squares / 10_000


def figures_of(c: SlotCounts, with_revenue: bool = True) -> SlotFigures:
    revenue = mean_interval(*_money_moments(c)) if with_revenue else None
    if with_revenue and revenue is None and c.recipients == 1:
        value = c.net_cents / 100
        revenue = Interval(value, value, value)  # shown, never compared (below MIN_RECIPIENTS)
    return SlotFigures(
        c,
        {
            "opens": wilson(c.opened, c.open_recipients),
            "clicks": wilson(c.clicked, c.recipients),
            "conversions": wilson(c.converted, c.recipients),
            "revenue": revenue,
        },
    )


def compare(
    counts: Sequence[SlotCounts], scope: str, currency: str, slot_choice: str | None = None, *, revenue: bool = True
) -> SlotComparison:
    """The comparison of ``counts`` (any order). ``revenue=False``: no revenue figure (several currencies)."""
    groups = []
    for evidence in EVIDENCE:
        slots = [figures_of(c, revenue) for c in sorted(counts, key=lambda c: c.slot) if c.evidence == evidence]
        slots = [s for s in slots if s.counts.recipients]
        if slots:
            groups.append(_compare_group(evidence, slots, currency, revenue))
    return SlotComparison(scope, slot_choice, currency, groups)


_SUMMED = ("recipients", "open_recipients", "opened", "clicked", "converted", "net_cents", "net_squares")


def pool(counts: Iterable[SlotCounts]) -> list[SlotCounts]:
    """The counts of several campaigns summed per (evidence, slot): every count and sum adds up."""
    totals: dict[tuple[str, str], SlotCounts] = {}
    for c in counts:
        key = (c.evidence, c.slot)
        before = totals.get(key, SlotCounts(c.slot, c.evidence))
        totals[key] = SlotCounts(c.slot, c.evidence, *(getattr(before, f) + getattr(c, f) for f in _SUMMED))
    return [totals[k] for k in sorted(totals, key=lambda k: (EVIDENCE.index(k[0]), k[1]))]


def _compare_group(evidence: str, slots: list[SlotFigures], currency: str, revenue: bool) -> EvidenceComparison:
    if len(slots) == 1:
        only = slots[0].slot
        return EvidenceComparison(evidence, slots, [], f"Only the {only} slot was sent to: nothing to compare.")
    differences = []
    for metric in METRICS:
        if metric.key != "revenue" or revenue:
            differences.extend(_against_leader(metric, slots, currency))
    return EvidenceComparison(evidence, slots, differences)


def _leader(metric: Metric, slots: list[SlotFigures]) -> SlotFigures | None:
    scored = [s for s in slots if s.figures[metric.key] is not None]
    enough = [s for s in scored if s.base(metric.key) >= MIN_RECIPIENTS] or scored
    best: SlotFigures | None = None
    for s in enough:  # in slot order: the earlier slot wins a tie
        if best is None or _estimate(s, metric) > _estimate(best, metric):
            best = s
    return best


def _estimate(s: SlotFigures, metric: Metric) -> float:
    interval = s.figures[metric.key]
    return interval.estimate if interval is not None else float("-inf")


def _against_leader(metric: Metric, slots: list[SlotFigures], currency: str) -> list[Difference]:
    if metric.key == "opens" and not any(s.counts.open_recipients for s in slots):
        first, second = slots[0].slot, slots[1].slot
        return [Difference("opens", first, second, "not_tracked", None, "opens are not tracked on these channels")]
    leader = _leader(metric, slots)
    if leader is None:
        return []
    out = []
    for other in slots:
        if other is leader:
            continue
        out.append(_difference(metric, leader, other, currency))
    return out


def _difference(metric: Metric, a: SlotFigures, b: SlotFigures, currency: str) -> Difference:
    na, nb = a.base(metric.key), b.base(metric.key)
    if min(na, nb) < MIN_RECIPIENTS:
        verdict = (
            f"too few recipients to compare {a.slot} and {b.slot} on {metric.noun} "
            f"({na:,} and {nb:,}; at least {MIN_RECIPIENTS} each)"
        )
        return Difference(metric.key, a.slot, b.slot, "too_few", None, verdict)
    ca, cb = a.counts, b.counts
    if metric.rate:
        x = {"opens": (ca.opened, cb.opened), "clicks": (ca.clicked, cb.clicked)}.get(
            metric.key, (ca.converted, cb.converted)
        )
        interval = newcombe(x[0], na, x[1], nb)
    else:
        interval = welch(*_money_moments(ca), *_money_moments(cb))
    assert interval is not None  # both bases are at least MIN_RECIPIENTS
    ci = f"95 % CI {_amount(interval.low, metric)}–{_amount(interval.high, metric)}"
    unit = " points" if metric.rate else f" {currency}"
    if interval.excludes_zero:
        verdict = f"{a.slot} beats {b.slot} on {metric.noun} by {_amount(interval.estimate, metric)}{unit} ({ci})"
        return Difference(metric.key, a.slot, b.slot, "better", interval, verdict)
    verdict = f"no significant difference between {a.slot} and {b.slot} on {metric.noun} ({ci}{unit})"
    return Difference(metric.key, a.slot, b.slot, "no_difference", interval, verdict)


def _amount(value: float, metric: Metric) -> str:
    """Points to one place (0.021 → '2.1'), money to two; a true minus sign."""
    text = fixed(value * 100, 1) if metric.rate else money(value)  # never "−0.0"
    return text.replace("-", "−")
