"""The slot comparison from a seeded ledger on SQLite and PostgreSQL: the counts match a row-by-row
count of ``reporting.slot_seed.ROWS`` and every interval and verdict follows from those counts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from reporting.slot_seed import CAMPAIGN, CURRENCY, T0, Expected, expected_counts, seed_slots
from topslot.campaign import Costs
from topslot.reporting.data import ReportQuery, build_report
from topslot.reporting.slots import MIN_RECIPIENTS, SlotComparison, SlotCounts, compare
from topslot.reporting.stats import mean_interval, newcombe, welch, wilson

WINDOW = (T0, T0.replace(day=20))


async def _comparison(engine: AsyncEngine, campaign: str = CAMPAIGN) -> SlotComparison:
    await seed_slots(engine)
    query = ReportQuery(campaign, "slot", window=WINDOW, costs=Costs(currency=CURRENCY), slot_choice="split")
    report = await build_report(engine, query, T0)
    assert report.slots is not None
    return report.slots


def _moments(e: Expected) -> tuple[int, float, float]:
    return e.recipients, float(e.net), float(sum(x * x for x in e.nets))


async def test_counts_match_the_ledger_row_by_row(engine: AsyncEngine) -> None:
    comparison = await _comparison(engine)
    expected = expected_counts()
    found = {(g.evidence, s.slot): s for g in comparison.groups for s in g.slots}
    assert list(found) == [("randomised", "07:30"), ("randomised", "17:00"),
                           ("observational", "07:30"), ("observational", "17:00")]  # fmt: skip
    for key, s in found.items():
        e, c = expected[key], s.counts
        assert (c.recipients, c.open_recipients, c.opened, c.clicked, c.converted) == (
            e.recipients, e.open_recipients, e.opened, e.clicked, e.converted
        ), key  # fmt: skip
        assert s.net_revenue == e.net and c.net_squares == sum(int(x * 100) ** 2 for x in e.nets)
        assert s.figures["opens"] == wilson(e.opened, e.open_recipients)
        assert s.figures["clicks"] == wilson(e.clicked, e.recipients)
        assert s.figures["conversions"] == wilson(e.converted, e.recipients)
        assert s.figures["revenue"] == pytest.approx(mean_interval(*_moments(e)))
    assert comparison.slot_choice == "split" and comparison.currency == CURRENCY


async def test_randomised_verdicts_follow_the_intervals(engine: AsyncEngine) -> None:
    comparison = await _comparison(engine)
    randomised, observational = comparison.groups
    assert (randomised.label, randomised.caveat) == ("randomised (causal)", None)
    assert observational.label == "observational" and "not assigned at random" in (observational.caveat or "")
    expected = expected_counts()
    morning, evening = expected[("randomised", "07:30")], expected[("randomised", "17:00")]
    by_metric = {d.metric: d for d in randomised.differences}
    assert list(by_metric) == ["opens", "clicks", "conversions", "revenue"]  # two slots: one difference each
    pairs = {
        "opens": (evening.opened, evening.open_recipients, morning.opened, morning.open_recipients),
        "clicks": (evening.clicked, evening.recipients, morning.clicked, morning.recipients),
        "conversions": (evening.converted, evening.recipients, morning.converted, morning.recipients),
    }
    for metric, (x1, n1, x2, n2) in pairs.items():
        d = by_metric[metric]
        leader_first = x1 / n1 >= x2 / n2
        interval = newcombe(x1, n1, x2, n2) if leader_first else newcombe(x2, n2, x1, n1)
        assert interval is not None and d.interval == interval
        assert (d.leader, d.other) == (("17:00", "07:30") if leader_first else ("07:30", "17:00"))
        assert d.outcome == ("better" if interval.excludes_zero else "no_difference")
    clicks = by_metric["clicks"]
    assert clicks.interval is not None
    points = f"{clicks.interval.estimate * 100:.1f}"
    low, high = (f"{v * 100:.1f}" for v in (clicks.interval.low, clicks.interval.high))
    assert clicks.verdict == f"17:00 beats 07:30 on clicks by {points} points (95 % CI {low}–{high})"
    conversions = by_metric["conversions"]
    assert conversions.outcome == "no_difference"
    assert conversions.verdict.startswith("no significant difference between 17:00 and 07:30 on conversions (95 % CI −")
    revenue = by_metric["revenue"]
    assert revenue.interval == pytest.approx(welch(*_moments(evening), *_moments(morning)))
    assert revenue.verdict.endswith(" USD)") or " USD " in revenue.verdict


async def test_too_few_recipients_under_the_threshold(engine: AsyncEngine) -> None:
    comparison = await _comparison(engine)
    observational = comparison.groups[1]
    few = expected_counts()[("observational", "17:00")].recipients
    assert few < MIN_RECIPIENTS
    assert {d.outcome for d in observational.differences} == {"too_few"}
    clicks = next(d for d in observational.differences if d.metric == "clicks")
    assert clicks.verdict == (
        f"too few recipients to compare 07:30 and 17:00 on clicks (40 and {few}; at least {MIN_RECIPIENTS} each)"
    )


async def test_nothing_sent_and_one_slot_say_so(engine: AsyncEngine) -> None:
    comparison = await _comparison(engine, "no-such-campaign")
    assert comparison.groups == [] and comparison.summary == "Nothing has been sent yet: no slots to compare."
    one = compare([SlotCounts("07:30", "randomised", recipients=50)], "x", "USD")
    (group,) = one.groups
    assert group.differences == [] and group.summary == "Only the 07:30 slot was sent to: nothing to compare."


def test_opens_not_tracked_on_sms_only() -> None:
    counts = [SlotCounts(s, "randomised", recipients=40, clicked=c) for s, c in (("07:30", 4), ("17:00", 9))]
    (group,) = compare(counts, "x", "USD").groups
    opens = group.differences[0]
    assert (opens.metric, opens.outcome, opens.interval) == ("opens", "not_tracked", None)
    assert group.slots[0].figures["opens"] is None


def test_three_slots_compare_each_with_the_leader() -> None:
    counts = [
        SlotCounts("07:30", "randomised", recipients=100, open_recipients=100, clicked=10),
        SlotCounts("12:00", "randomised", recipients=100, open_recipients=100, clicked=30),
        SlotCounts("17:00", "randomised", recipients=100, open_recipients=100, clicked=12),
    ]
    (group,) = compare(counts, "x", "USD").groups
    clicks = [(d.leader, d.other, d.outcome) for d in group.differences if d.metric == "clicks"]
    assert clicks == [("12:00", "07:30", "better"), ("12:00", "17:00", "better")]
    opens = [(d.leader, d.other, d.outcome) for d in group.differences if d.metric == "opens"]
    assert opens == [("07:30", "12:00", "no_difference"), ("07:30", "17:00", "no_difference")]  # tie: earlier leads
    assert all("−0.0" not in d.verdict for d in group.differences)


def test_revenue_of_one_recipient_is_shown_not_compared() -> None:
    (group,) = compare([SlotCounts("07:30", "observational", recipients=1, net_cents=1250,
                                   net_squares=1250**2)], "x", "USD").groups  # fmt: skip
    revenue = group.slots[0].figures["revenue"]
    assert revenue is not None and (revenue.estimate, revenue.low, revenue.high) == (12.5, 12.5, 12.5)
    assert group.slots[0].net_revenue == Decimal("12.50")


def test_pool_sums_and_leaves_out_single_slot_campaigns() -> None:
    from topslot.reporting.slots import ALL_CAMPAIGNS, overview, pool

    a = [SlotCounts("07:30", "randomised", 40, 40, 10, 4, 1, 500, 250_000),
         SlotCounts("17:00", "randomised", 40, 40, 20, 8, 2, 900, 810_000)]  # fmt: skip
    b = [SlotCounts("07:30", "randomised", 30, 0, 0, 3, 0, 0, 0),
         SlotCounts("17:00", "randomised", 30, 0, 0, 9, 1, 100, 10_000)]  # fmt: skip
    lonely = [SlotCounts("07:30", "randomised", 500, 500, 400, 300, 50, 0, 0)]  # one slot: compares nothing
    assert pool([*a, *b]) == [SlotCounts("07:30", "randomised", 70, 40, 10, 7, 1, 500, 250_000),
                              SlotCounts("17:00", "randomised", 70, 40, 20, 17, 3, 1000, 820_000)]  # fmt: skip
    result = overview([("a", "USD", "split", a), ("b", "USD", "split", b), ("c", "USD", None, lonely)], T0)
    assert result.overall.scope == ALL_CAMPAIGNS and [c.scope for c in result.campaigns] == ["a", "b", "c"]
    assert [s.counts for s in result.overall.groups[0].slots] == pool([*a, *b])
    assert "Pooled" in result.notes[0] and result.overall.currency == "USD"
    mixed = overview([("a", "USD", "split", a), ("b", "EUR", "split", b)], T0)
    assert mixed.overall.currency == "mixed" and "several currencies (EUR, USD)" in mixed.notes[1]
    assert all(s.figures["revenue"] is None for s in mixed.overall.groups[0].slots)
    assert "revenue" not in {d.metric for d in mixed.overall.groups[0].differences}
    assert mixed.campaigns[1].currency == "EUR" and mixed.campaigns[1].groups[0].slots[0].figures["revenue"]


def test_a_split_campaign_without_randomised_rows_says_nothing_is_causal() -> None:
    counts = [SlotCounts(s, "observational", recipients=40) for s in ("07:30", "17:00")]
    assert compare(counts, "x", "USD", "split").notes == [
        "slot_choice is split, but no recipient has a randomised slot basis (split or exploration) yet: "
        "nothing here is causal evidence"
    ]
    assert compare(counts, "x", "USD", "first").notes == [] and compare([], "x", "USD", "split").notes == []
