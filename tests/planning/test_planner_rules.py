"""The planner's rules: quiet hours (shift, skip; DST days, CN substituted workdays), the zone of a
contact known only roughly, slot choice and channel strategy."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from planning.test_planner import campaign
from topslot.campaign import Campaign
from topslot.pacing import QuietRules
from topslot.planning.planner import PlanContact, Planner
from topslot.planning.summary import PlanSummaryBuilder, summary_lines

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SMS_RULES = QuietRules.defaults()  # SMS and IM 21:00-08:00, no email quiet hours


def with_(c: Campaign, schedule: dict[str, Any] | None = None, **keys: Any) -> Campaign:
    data = c.model_dump(by_alias=True)
    data["schedule"].update(schedule or {})
    data.update(keys)
    return Campaign.model_validate(data)


def plan(
    c: Campaign, contacts: list[PlanContact], quiet: QuietRules = SMS_RULES, now: datetime = NOW
) -> tuple[Planner, list[dict[str, Any]]]:
    planner = Planner(c, now, default_timezone="UTC", default_country="US", quiet=quiet)
    return planner, list(planner.plan_batch(contacts))


NY = PlanContact(1, "America/New_York", None, "US", ("email", "sms"))


def test_shift_sends_the_sms_when_quiet_hours_end_and_the_email_at_the_slot() -> None:
    c = with_(campaign(), {"start": "2026-05-06", "end": "2026-05-06", "days": "every_day"}, quiet_hours="shift")
    _, rows = plan(c, [NY])
    by = {r["channel"]: r for r in rows}
    assert by["email"]["local_time"].strftime("%H:%M") == "07:30"
    assert by["sms"]["local_time"].strftime("%Y-%m-%d %H:%M") == "2026-05-06 08:00"
    assert by["sms"]["due_utc"] == datetime(2026, 5, 6, 12, 0, tzinfo=UTC)  # EDT
    assert by["sms"]["slot"] == "07:30" and by["sms"]["state"] == "planned"  # the row keeps its slot


def test_skip_leaves_the_sms_out_with_the_reason() -> None:
    c = with_(campaign(), {"start": "2026-05-06", "end": "2026-05-06", "days": "every_day"}, quiet_hours="skip")
    planner, rows = plan(c, [NY])
    states = {r["channel"]: (r["state"], r["skip_reason"]) for r in rows}
    assert states == {"email": ("planned", None), "sms": ("skipped", "quiet_hours")}
    assert planner.left_out["quiet_hours"] == 1


def test_shift_is_dst_exact_an_opening_inside_the_spring_gap_moves_to_its_end() -> None:
    # 2026-03-08: New York's clocks jump from 02:00 to 03:00. Quiet until 02:30, which does not exist.
    rules = QuietRules({"sms": "21:00-02:30"}, {})
    c = with_(
        campaign(),
        {"start": "2026-03-08", "end": "2026-03-08", "days": "every_day", "slots": ["01:00"]},
        quiet_hours="shift",
    )
    _, rows = plan(c, [NY], quiet=rules)
    sms = next(r for r in rows if r["channel"] == "sms")
    assert sms["due_utc"] == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT, the first instant after the gap
    assert sms["local_time"].strftime("%H:%M %Z") == "03:00 EDT"


def test_quiet_hours_on_a_chinese_substituted_working_saturday() -> None:
    # 2026-02-14 is a Saturday worked in China (Spring Festival); in the US it is a weekend.
    c = with_(campaign(), {"start": "2026-02-14", "end": "2026-02-14", "days": "workdays"}, quiet_hours="shift")
    shanghai = PlanContact(2, "Asia/Shanghai", None, "CN", ("email", "sms"))
    planner, rows = plan(c, [shanghai, NY])
    assert {(r["contact_id"], r["channel"], r["local_time"].strftime("%H:%M")) for r in rows} == {
        (2, "email", "07:30"),
        (2, "sms", "08:00"),
    }
    assert planner.left_out["weekend"] == 2  # the New Yorker, on both channels


def test_a_country_rule_applies_to_that_countrys_recipients_only() -> None:
    rules = QuietRules({"sms": None}, {"CN": {"sms": "07:00-09:00"}})
    c = with_(campaign(), {"start": "2026-05-06", "end": "2026-05-06", "days": "every_day"}, quiet_hours="skip")
    shanghai = PlanContact(2, "Asia/Shanghai", None, "CN", ("sms",))
    _, rows = plan(c, [shanghai, NY], quiet=rules)
    assert {r["contact_id"]: r["state"] for r in rows if r["channel"] == "sms"} == {2: "skipped", 1: "planned"}


def test_a_fixed_zone_campaign_judges_quiet_hours_in_the_recipients_own_zone() -> None:
    # 10:00 in Shanghai is 22:00 the evening before in New York (EDT).
    c = with_(
        campaign(),
        {
            "start": "2026-05-06",
            "end": "2026-05-06",
            "days": "every_day",
            "timezone": "Asia/Shanghai",
            "slots": ["10:00"],
        },
        quiet_hours="refuse",
    )
    shanghai = PlanContact(2, "Asia/Shanghai", None, "CN", ("sms",))
    _, rows = plan(c, [shanghai, NY])
    sms = {r["contact_id"]: (r["state"], r["skip_reason"]) for r in rows if r["channel"] == "sms"}
    assert sms == {2: ("planned", None), 1: ("skipped", "quiet_hours")}


# ---------------------------------------------------------------- low-confidence zones

US_ONLY = PlanContact(3, None, None, "US", ("email",))  # the US has many zones
NOBODY = PlanContact(4, None, None, None, ("email",))


def test_low_confidence_zone_fallback_country_center_and_skip() -> None:
    sched = {"start": "2026-05-06", "end": "2026-05-06", "days": "every_day", "fallback_timezone": "Asia/Shanghai"}
    _, rows = plan(with_(campaign(), sched), [US_ONLY])
    assert [(r["timezone"], r["tz_source"]) for r in rows] == [("Asia/Shanghai", "fallback")]

    planner, rows = plan(with_(campaign(), {**sched, "low_confidence_zone": "country_center"}), [US_ONLY, NOBODY])
    assert [(r["contact_id"], r["timezone"], r["tz_source"]) for r in rows] == [
        (3, "America/Chicago", "country_center"),
        (4, "Asia/Shanghai", "fallback"),  # no country to centre on
    ]
    assert rows[0]["due_utc"] == datetime(2026, 5, 6, 12, 30, tzinfo=UTC)  # 07:30 CDT
    assert planner.zone_sources == Counter({("email", "country_center"): 1, ("email", "fallback"): 1})

    planner, rows = plan(with_(campaign(), {**sched, "low_confidence_zone": "skip"}), [US_ONLY, NY])
    assert {r["contact_id"]: (r["state"], r["skip_reason"]) for r in rows if r["channel"] == "email"} == {
        3: ("skipped", "low_confidence_zone"),
        1: ("planned", None),
    }


def test_a_phone_on_a_shared_code_centres_on_the_numbers_country() -> None:
    russian_mobile = PlanContact(5, None, "+79000000000", None, ("email",))  # a Russian mobile: no zone of its own
    sched = {"start": "2026-05-06", "end": "2026-05-06", "days": "every_day", "low_confidence_zone": "country_center"}
    _, rows = plan(with_(campaign(), sched), [russian_mobile])
    assert [(r["timezone"], r["tz_source"], r["country"]) for r in rows] == [("Europe/Moscow", "country_center", "RU")]


# ---------------------------------------------------------------- slot choice and channel strategy


def test_split_rows_carry_one_slot_each_and_their_basis() -> None:
    c = with_(
        campaign(),
        {"start": "2026-05-06", "end": "2026-05-06", "days": "every_day", "slots": ["07:30", "17:00"]},
        slot_choice="split",
    )
    contacts = [PlanContact(i, "Europe/Paris", None, "FR", ("email",)) for i in range(400)]
    planner, rows = plan(c, contacts)
    assert len(rows) == 400 and {r["slot_basis"] for r in rows} == {"split"}
    per_slot = Counter(r["slot"] for r in rows)
    assert set(per_slot) == {"07:30", "17:00"} and 150 < per_slot["07:30"] < 250
    assert planner.slot_bases == Counter({("email", s, "split"): n for s, n in per_slot.items()})
    _, again = plan(c, contacts)
    assert [r["slot"] for r in again] == [r["slot"] for r in rows]


def test_split_with_every_slot_sends_each_day_at_the_chosen_slot() -> None:
    sched = {
        "start": "2026-05-06",
        "end": "2026-05-08",
        "days": "every_day",
        "slots": ["07:30", "17:00"],
        "per_recipient": "every_slot",
    }
    _, rows = plan(
        with_(campaign(), sched, slot_choice="split"), [PlanContact(9, "Europe/Paris", None, "FR", ("email",))]
    )
    assert len(rows) == 3 and len({r["slot"] for r in rows}) == 1


def test_learned_uses_each_contacts_history() -> None:
    sched = {"start": "2026-05-06", "end": "2026-05-06", "days": "every_day", "slots": ["07:30", "17:00"]}
    c = with_(campaign(), sched, slot_choice="learned", learned={"exploration": "0%"})
    evening = PlanContact(1, "Europe/Paris", None, "FR", ("email",), {"17:00": (2, 2), "07:30": (2, 0)})
    unknown = PlanContact(2, "Europe/Paris", None, "FR", ("email",))
    planner, rows = plan(c, [evening, unknown])
    assert [(r["contact_id"], r["slot"], r["slot_basis"]) for r in rows] == [
        (1, "17:00", "history"),
        (2, "07:30", "default"),
    ]


def test_first_available_sends_on_the_first_channel_the_contact_can_receive() -> None:
    sched = {"start": "2026-05-06", "end": "2026-05-06", "days": "every_day"}
    c = with_(campaign(), sched, channel_strategy="first_available", quiet_hours="shift")
    sms_only = PlanContact(2, "America/New_York", None, "US", ("sms",))
    planner, rows = plan(c, [NY, sms_only])
    assert [(r["contact_id"], r["channel"]) for r in rows] == [(1, "email"), (2, "sms")]
    assert planner.left_out["earlier_channel"] == 1


def test_fallback_plans_the_next_channel_at_the_next_slot_conditional_on_the_first() -> None:
    sched = {"start": "2026-05-06", "end": "2026-05-07", "days": "every_day", "slots": ["07:30", "17:00"]}
    c = with_(campaign(), sched, channel_strategy="fallback", quiet_hours="shift")
    _, rows = plan(c, [NY])
    assert [(r["channel"], str(r["slot_date"]), r["slot"], r["fallback_of"]) for r in rows] == [
        ("email", "2026-05-06", "07:30", None),
        ("sms", "2026-05-06", "17:00", "email"),
    ]


def test_fallback_with_no_later_slot_leaves_the_next_channel_out() -> None:
    sched = {"start": "2026-05-06", "end": "2026-05-06", "days": "every_day", "slots": ["07:30", "17:00"]}
    c = with_(campaign(), sched, channel_strategy="fallback", slot_choice="split", quiet_hours="shift")
    contacts = [PlanContact(i, "America/New_York", None, "US", ("email", "sms")) for i in range(60)]
    planner, rows = plan(c, contacts)
    late = {r["contact_id"] for r in rows if r["channel"] == "email" and r["slot"] == "17:00"}
    assert late and planner.left_out["no_later_slot"] == len(late)
    assert not any(r["channel"] == "sms" and r["contact_id"] in late for r in rows)


def test_plan_lines_show_shifted_slots_conditional_rows_and_slot_choices() -> None:
    sched = {"start": "2026-05-06", "end": "2026-05-07", "days": "every_day", "slots": ["07:30", "17:00"]}
    c = with_(campaign(), sched, channel_strategy="fallback", quiet_hours="shift", slot_choice="split")
    contacts = [PlanContact(i, "America/New_York", None, "US", ("email", "sms")) for i in range(40)]
    planner, rows = plan(c, contacts)
    builder = PlanSummaryBuilder()
    for row in rows:
        builder.add(row)
    summary = builder.build({"email": 100, "sms": 100}, c.schedule.arrive_within, now=NOW)
    slot_bases: dict[str, dict[str, dict[str, int]]] = {}
    for (ch, slot, basis), n in planner.slot_bases.items():
        slot_bases.setdefault(ch, {}).setdefault(slot, {})[basis] = n
    text = "\n".join(summary_lines(replace(summary, slot_bases=slot_bases), channels=c.channels))
    fallbacks = sum(1 for r in rows if r["fallback_of"] == "email")
    shifted = sum(1 for r in rows if r["channel"] == "sms" and r["slot"] == "07:30")
    assert fallbacks == sum(
        int(m.group(1))
        for m in re.finditer(r"sms (\d+) only if the email got no human open or click \(fallback\)", text)
    )
    assert shifted and "07:30 → 08:00 America/New_York" in text  # SMS falling back to the next morning
    emails = Counter(r["slot"] for r in rows if r["channel"] == "email")
    assert f"slots: email: 07:30 {emails['07:30']} (split {emails['07:30']}), 17:00 {emails['17:00']} (split" in text
