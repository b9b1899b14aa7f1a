"""The planning facade: contacts in, ledger rows out, same as planning each contact by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from topslot.campaign import Campaign
from topslot.planning.planner import PlanContact, Planner, plan_rows
from topslot.planning.slots import plan_slots
from topslot.planning.timezone_resolution import resolve_timezone
from topslot.planning.workdays import WorkdayCalendar
from topslot.planning.zones import region_for_phone

NOW = datetime(2027, 5, 1, tzinfo=UTC)


def campaign(**schedule: Any) -> Campaign:
    sched: dict[str, Any] = {
        "start": "2027-05-06",
        "end": "2027-05-09",
        "fallback_timezone": "Asia/Shanghai",
        "default_country": "CN",
    }
    sched.update(schedule)
    return Campaign.model_validate(
        {
            "id": "mothers-day-2027",
            "name": "Mother's Day",
            "channels": ["email", "sms"],
            "audience": {"all": [{"attribute": "gender", "equals": "female"}]},
            "schedule": sched,
            "landing_page": {"url": "https://shop.example.com/mothers-day"},
            "content": {
                "email": {"from": "Shop <news@shop.example.com>", "subject": "Hi", "html": "m/email.html.j2"},
                "sms": {"body": "m/sms.txt.j2"},
            },
        }
    )


def planner(c: Campaign | None = None, now: datetime = NOW) -> Planner:
    return Planner(c or campaign(), now, default_timezone="UTC", default_country="US")


BOTH = ("email", "sms")


def test_rows_carry_the_ledger_key_and_provenance() -> None:
    p = planner()
    rows = list(p.plan_batch([PlanContact(7, "America/New_York", "+12125551234", "US", ("email",))]))
    assert rows == [
        {
            "campaign_id": "mothers-day-2027",
            "contact_id": 7,
            "channel": "email",
            "slot_date": date(2027, 5, 6),
            "slot": "07:30",
            "due_utc": datetime(2027, 5, 6, 11, 30, tzinfo=UTC),
            "local_time": rows[0]["local_time"],
            "timezone": "America/New_York",
            "tz_source": "contact",
            "country": "US",
            "slot_basis": "first",
            "fallback_of": None,
            "state": "planned",
            "skip_reason": None,
            "late": False,
        }
    ]
    assert rows[0]["local_time"].isoformat() == "2027-05-06T07:30:00-04:00"


def test_tz_sources_and_holiday_countries() -> None:
    p = planner()
    contacts = [
        PlanContact(1, "Europe/Paris", None, "FR", BOTH),
        PlanContact(2, None, "+12125551234", "US", BOTH),
        PlanContact(3, None, None, "JP", BOTH),
        PlanContact(4, None, None, None, BOTH),
        PlanContact(5, None, "+8613800138000", None, BOTH),
        PlanContact(6, "Bad/Zone", None, "ZZ", BOTH),
    ]
    assert [p.placement_for(c) for c in contacts] == [
        ("Europe/Paris", "contact", "FR"),
        ("America/New_York", "phone", "US"),
        ("Asia/Tokyo", "country", "JP"),
        ("Asia/Shanghai", "fallback", "CN"),  # campaign fallback zone and default country
        ("Asia/Shanghai", "phone", "CN"),  # +86 names the country too
        ("Asia/Shanghai", "fallback", "CN"),
    ]


def test_fixed_campaign_zone() -> None:
    p = planner(campaign(timezone="Europe/London"))
    rows = list(p.plan_batch([PlanContact(1, "Asia/Tokyo", None, "JP", ("sms",))]))
    assert [(r["timezone"], r["tz_source"], r["country"]) for r in rows] == [("Europe/London", "campaign", "JP")]


def test_channels_and_left_out_counts() -> None:
    p = planner(campaign(per_recipient="every_slot"))
    contacts = [
        PlanContact(1, "Europe/Paris", None, "FR", BOTH),  # 05-06 Ascension, 05-08 VE Day + weekend
        PlanContact(2, "Asia/Shanghai", None, "CN", ("sms", "im")),  # im is not a campaign channel
        PlanContact(3, "Asia/Shanghai", None, "CN", ()),
    ]
    rows = list(p.plan_batch(contacts))
    by_contact: dict[int, list[tuple[str, str, str]]] = {}
    for r in rows:
        by_contact.setdefault(r["contact_id"], []).append((r["channel"], r["slot_date"].isoformat(), r["slot"]))
    assert sorted(by_contact[1]) == sorted((ch, "2027-05-07", s) for ch in BOTH for s in ("07:30", "17:00"))
    assert {ch for ch, _, _ in by_contact[2]} == {"sms"}
    assert len(by_contact[2]) == 4  # Thu + Fri × 2 slots; the weekend is off in China in 2027-05
    assert 3 not in by_contact
    assert p.left_out == {"holiday": 8, "weekend": 4 + 4, "no_channel": 1}
    assert p.rows_planned == len(rows) and p.contacts_seen == 3


def test_missed_rows_are_skipped_rows() -> None:
    now = datetime(2027, 5, 6, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai: 07:30 long gone
    p = planner(campaign(missed_slot={"grace": "15m", "then": "skip"}), now)
    rows = list(p.plan_batch([PlanContact(1, "Asia/Shanghai", None, "CN", ("email",))]))
    assert [(r["state"], r["skip_reason"], r["slot"]) for r in rows] == [("skipped", "missed_slot", "07:30")]
    assert p.left_out == {"missed_slot": 1} and p.rows_skipped == 1


def test_planning_twice_gives_the_same_rows() -> None:
    contacts = [
        PlanContact(i, tz, None, cc, BOTH)
        for i, (tz, cc) in enumerate(
            [("Asia/Shanghai", "CN"), ("America/Los_Angeles", "US"), ("Europe/Berlin", "DE"), (None, "GB")] * 5
        )
    ]
    batches = [contacts[:7], contacts[7:]]
    first = list(plan_rows(campaign(), batches, NOW, default_timezone="UTC", default_country="US")[1])
    second = list(plan_rows(campaign(), batches, NOW, default_timezone="UTC", default_country="US")[1])
    assert first == second
    keys = [(r["campaign_id"], r["contact_id"], r["channel"], r["slot_date"], r["slot"]) for r in first]
    assert len(keys) == len(set(keys))


ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", None, "Nope/Nope"]
PHONES = [None, "+8613800138000", "+12125551234", "+79123456789", "+74951234567", "+33123456789", "bad"]
COUNTRIES = [None, "CN", "US", "FR", "RU", "GB", "ZZ", "JP", "AU"]


@settings(max_examples=60, deadline=None)
@given(
    contacts=st.lists(
        st.tuples(st.sampled_from(ZONES), st.sampled_from(PHONES), st.sampled_from(COUNTRIES)), min_size=1, max_size=30
    ),
    per_recipient=st.sampled_from(["once", "every_slot"]),
    now=st.datetimes(min_value=datetime(2027, 5, 5), max_value=datetime(2027, 5, 10), timezones=st.just(UTC)),
)
def test_facade_matches_planning_each_contact_alone(
    contacts: list[tuple[str | None, str | None, str | None]], per_recipient: str, now: datetime
) -> None:
    c = campaign(per_recipient=per_recipient)
    p = planner(c, now)
    rows = list(p.plan_batch([PlanContact(i, tz, ph, cc, ("email",)) for i, (tz, ph, cc) in enumerate(contacts)]))
    calendar = WorkdayCalendar("US")
    expected = []
    for i, (tz, ph, cc) in enumerate(contacts):
        zone, source = resolve_timezone(tz, ph, cc, c.schedule, "UTC")
        country = calendar.country_for(cc, region_for_phone(ph), c.schedule.default_country)
        plan = plan_slots(c.schedule, zone, country, now, calendar=calendar)
        expected += [(i, zone, source, s.slot_date, s.slot, s.due_utc, "planned") for s in plan.planned]
        expected += [(i, zone, source, s.slot_date, s.slot, s.due_utc, "skipped") for s in plan.skipped]
    got = [
        (r["contact_id"], r["timezone"], r["tz_source"], r["slot_date"], r["slot"], r["due_utc"], r["state"])
        for r in rows
    ]
    assert sorted(got, key=str) == sorted(expected, key=str)


def test_a_number_on_a_shared_calling_code_gets_its_own_countrys_holidays() -> None:
    """A contact known only by a New York number: the zone came from the number, and so must the
    calendar (Thanksgiving off, China's substituted working Saturday not a send day), not the
    campaign's default country (CN)."""
    c = campaign(start="2027-11-20", end="2027-11-27", days="workdays", slots=["07:30"], per_recipient="every_slot")
    rows = list(planner(c).plan_batch([PlanContact(1, None, "+12125551234", None, ("email",))]))
    planned = {r["slot_date"].isoformat(): r["state"] for r in rows}
    assert {r["country"] for r in rows} == {"US"} and {r["timezone"] for r in rows} == {"America/New_York"}
    assert [d for d, state in sorted(planned.items()) if state == "planned"] == [
        "2027-11-22", "2027-11-23", "2027-11-24", "2027-11-26",
    ]  # fmt: skip
