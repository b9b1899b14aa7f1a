"""What `topslot plan` prints: the per-bucket summary and the JSON Lines records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from topslot.planning.planner import PlanContact, Planner
from topslot.planning.summary import (
    MessageSample,
    PlanSummaryBuilder,
    cost_lines,
    dispatch_starts,
    estimate_costs,
    iso_utc,
    jsonl_lines,
    summary_lines,
)

from .test_planner import campaign

NOW = datetime(2027, 5, 1, tzinfo=UTC)


def plan(contacts: list[PlanContact], now: datetime = NOW, **schedule: object) -> tuple[Planner, list[dict]]:
    p = Planner(campaign(**schedule), now, default_timezone="UTC", default_country="US")
    return p, list(p.plan_batch(contacts))


def test_summary_groups_by_local_slot_and_zone() -> None:
    contacts = [PlanContact(i, "Asia/Shanghai", None, "CN", ("email", "sms")) for i in range(3)]
    contacts += [PlanContact(10 + i, "Asia/Singapore", None, "SG", ("email",)) for i in range(2)]
    contacts += [PlanContact(20, "America/New_York", None, "US", ("sms",))]
    p, rows = plan(contacts)
    builder = PlanSummaryBuilder()
    assert list(builder.add_all(rows)) == rows
    summary = builder.build({"email": 2000, "sms": 30}, timedelta(minutes=10), left_out={**p.left_out, "no_consent": 4})
    assert [(b.timezone, b.slot, iso_utc(b.due_utc), b.recipients) for b in summary.buckets] == [
        ("Asia/Shanghai", "07:30", "2027-05-05T23:30:00Z", {"email": 3, "sms": 3}),
        ("Asia/Singapore", "07:30", "2027-05-05T23:30:00Z", {"email": 2}),
        ("America/New_York", "07:30", "2027-05-06T11:30:00Z", {"sms": 1}),
    ]
    # Shanghai and Singapore share the UTC instant: one email bucket of 5.
    email = [w for w in summary.windows if w.channel == "email"]
    assert [(w.count, w.label) for w in email] == [(5, "2027-05-06 07:30 Asia/Shanghai (+1 more zone)")]
    assert summary.planned_by_channel == {"email": 5, "sms": 4}
    lines = summary_lines(summary, channels=["email", "sms"])
    assert lines[0] == (
        "2027-05-06 07:30 Asia/Shanghai (+0800) = 2027-05-05T23:30:00Z, dispatch from 2027-05-05T23:29:00Z: email 3, sms 3"
    )
    assert lines[-2] == "planned: email 5, sms 4"
    assert lines[-1] == "left out: no consent 4"


def test_summary_warns_plainly_when_a_bucket_cannot_fit() -> None:
    contacts = [PlanContact(i, "Asia/Shanghai", None, "CN", ("sms",)) for i in range(40)]
    _, rows = plan(contacts)
    builder = PlanSummaryBuilder()
    for row in rows:
        builder.add(row)
    summary = builder.build({"sms": 0.05}, timedelta(minutes=10))
    assert len(summary.warnings) == 1
    assert summary_lines(summary)[-1] == (
        "warning: bucket 2027-05-06 07:30 Asia/Shanghai: 40 SMS at 0.05/s need 13 min 20 s, more than the 10 min "
        "window; dispatch starts 2027-05-05 23:14:00 UTC, 16 min before the slot"
    )


def test_missed_and_late_are_shown() -> None:
    now = datetime(2027, 5, 5, 23, 40, tzinfo=UTC)  # 07:40 in Shanghai, 15-minute grace
    contacts = [PlanContact(1, "Asia/Shanghai", None, "CN", ("email",))]
    _p, rows = plan(contacts, now, per_recipient="every_slot", missed_slot={"grace": "15m", "then": "skip"})
    late_now = datetime(2027, 5, 6, 9, 10, tzinfo=UTC)  # 17:10
    p2, rows2 = plan(contacts, late_now, per_recipient="every_slot", missed_slot={"grace": "5m", "then": "skip"})
    builder = PlanSummaryBuilder()
    for row in rows + rows2:
        builder.add(row)
    summary = builder.build(2000, timedelta(minutes=10), left_out=p2.left_out, now=now)
    first = summary.buckets[0]
    assert first.late == {"email": 1} and first.missed == {"email": 1}
    lines = summary_lines(summary)
    assert lines[0].endswith("; missed email 1; late (sent at once) email 1")
    assert "left out: missed slot 2, weekend 4" in lines  # at 17:10 with 5 min grace both slots of 05-06 are gone


def test_jsonl_records() -> None:
    contacts = [PlanContact("c-1", None, "+12125551234", "US", ("email",))]
    _, rows = plan(contacts)
    builder = PlanSummaryBuilder()
    for row in rows:
        builder.add(row)
    summary = builder.build(2000, timedelta(minutes=10))
    [line] = list(jsonl_lines(rows, dispatch_starts(summary.windows)))
    assert json.loads(line) == {
        "contact_id": "c-1",
        "channel": "email",
        "slot_date": "2027-05-06",
        "slot": "07:30",
        "local_time": "2027-05-06T07:30:00-04:00",
        "due_utc": "2027-05-06T11:30:00Z",
        "timezone": "America/New_York",
        "tz_source": "phone",
        "dispatch_start_utc": "2027-05-06T11:29:00Z",
        "state": "planned",
        "slot_basis": "first",
    }


def test_jsonl_leaves_out_skipped_rows_unless_asked() -> None:
    now = datetime(2027, 5, 6, 3, 0, tzinfo=UTC)
    _, rows = plan(
        [PlanContact(1, "Asia/Shanghai", None, "CN", ("email",))], now, missed_slot={"grace": "15m", "then": "skip"}
    )
    assert list(jsonl_lines(rows, {})) == []
    [line] = list(jsonl_lines(rows, {}, include_skipped=True))
    record = json.loads(line)
    assert (
        record["state"] == "skipped" and record["skip_reason"] == "missed_slot" and record["dispatch_start_utc"] is None
    )


# ---------------------------------------------------------------- costs and segments


def row(contact_id: int, country: str | None = "US", channel: str = "sms", state: str = "planned") -> dict:
    return {"contact_id": contact_id, "country": country, "channel": channel, "state": state}


def test_message_sample_counts_every_message_and_keeps_a_bounded_deterministic_sample() -> None:
    rows = [row(i, "CN" if i % 3 == 0 else "US") for i in range(1, 1001)]
    rows += [row(5, "US")]  # every_slot: the same contact twice, two messages, sampled once
    rows += [row(2000, "US", channel="email"), row(2001, "US", state="skipped"), row(2002, None)]
    sample = MessageSample(["sms"], per_group=10)
    sample.add(rows[:400])
    sample.add(rows[400:])
    assert dict(sample.counts) == {("sms", "CN"): 333, ("sms", "US"): 668, ("sms", "-"): 1}
    groups = sample.groups()
    assert [len(groups[g]) for g in (("sms", "CN"), ("sms", "US"), ("sms", "-"))] == [10, 10, 1]
    assert all(i % 3 == 0 for i in groups[("sms", "CN")]) and len(set(groups[("sms", "US")])) == 10
    assert max(groups[("sms", "US")]) > 500  # spread over the ids, not the first ten
    again = MessageSample(["sms"], per_group=10)
    again.add(list(reversed(rows)))
    assert again.groups() == groups  # the same plan samples the same recipients, in any order
    assert sample.contact_ids() == {i for ids in groups.values() for i in ids}


def test_costs_are_estimated_per_country_from_the_rendered_sample() -> None:
    sample = MessageSample(["sms"])
    sample.add([row(i, "CN") for i in range(300)] + [row(1000 + i, "US") for i in range(99)] + [row(5000, "FR")])
    rendered = {("sms", "CN"): [2] * 90 + [3] * 10, ("sms", "US"): [1] * 99, ("sms", "FR"): []}
    unit = {"email": Decimal("0.0004"), "sms": Decimal("0.0079")}
    email, sms = estimate_costs({"email": 1000, "sms": 400}, unit, "USD", sample, rendered)

    assert (email.messages, email.segments, email.cost) == (1000, None, Decimal("0.4000"))
    assert sms.per_message == {"CN": Decimal("2.10"), "US": Decimal("1.00")}
    assert sms.segments == Decimal("2.10") * 300 + 99 and sms.sampled == 199 and sms.unestimated == 1
    assert sms.cost == sms.segments * Decimal("0.0079")
    assert cost_lines([email, sms]) == [
        "cost email: 1,000 message(s) × 0.0004 USD = 0.40 USD",
        "cost sms: 400 message(s), ~729 segment(s) (estimated from 199 rendered; per message: CN 2.10, US 1.00;"
        " 1 message(s) not estimated) × 0.0079 USD = ~5.76 USD",
    ]
    fields = [sms.row_fields(row(1, c)) for c in ("CN", "US", "FR")]
    assert fields == [
        {"est_segments": 2.1, "est_cost": 0.01659},
        {"est_segments": 1.0, "est_cost": 0.0079},
        {"est_segments": None, "est_cost": None},
    ]
    assert email.row_fields(row(1, channel="email")) == {"cost": 0.0004}


def test_summary_and_json_lines_carry_the_costs() -> None:
    contacts = [PlanContact(i, "Asia/Shanghai", None, "CN", ("email", "sms")) for i in range(3)]
    p, rows = plan(contacts)
    builder = PlanSummaryBuilder()
    for r in rows:
        builder.add(r)
    sample = MessageSample(["sms"])
    sample.add(rows)
    summary = builder.build({"email": 2000, "sms": 30}, timedelta(minutes=10))
    costs = estimate_costs(
        summary.planned_by_channel, {"email": Decimal("0.001"), "sms": Decimal("0.01")}, "EUR", sample,
        {("sms", "CN"): [2, 2, 2]},
    )  # fmt: skip
    lines = summary_lines(summary, channels=["email", "sms"], costs=costs)
    assert lines[-3:] == [
        "planned: email 3, sms 3",
        "cost email: 3 message(s) × 0.001 EUR = 0.00 EUR",
        "cost sms: 3 message(s), ~6 segment(s) (estimated from 3 rendered; per message: CN 2.00)"
        " × 0.01 EUR = ~0.06 EUR",
    ]
    records = [json.loads(line) for line in jsonl_lines(rows, dispatch_starts(summary.windows), costs=costs)]
    assert {(r["channel"], r.get("cost"), r.get("est_segments"), r.get("est_cost")) for r in records} == {
        ("email", 0.001, None, None),
        ("sms", None, 2.0, 0.02),
    }
