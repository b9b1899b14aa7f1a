"""Planning a campaign into the ledger: idempotent, edit-safe, and never a second send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from scheduling.ledger_fixtures import NOW, campaign, populate, rows, settings, suppress
from topslot.scheduling.plan_run import STARTS_KEPT, channel_rates, plan_campaign, settle_dispatch_starts
from topslot.store import ledger
from topslot.store.schema import deliveries, dispatch_starts


async def plan(engine, tmp_path, c, now=NOW):  # noqa: ANN001, ANN201
    await ledger.record_campaign(engine, c, "hash", now)
    return await plan_campaign(engine, c, settings(tmp_path), now, write=True)


async def test_plan_writes_one_row_per_recipient_at_their_local_slot(engine, tmp_path) -> None:
    ids = await populate(engine, tmp_path)
    outcome = await plan(engine, tmp_path, campaign())
    got = await rows(engine)
    by_contact = {r["contact_id"]: r for r in got}
    # women with consent only: shanghai, london, newyork, newyork2
    assert set(by_contact) == {ids["shanghai"], ids["london"], ids["newyork"], ids["newyork2"]}
    assert by_contact[ids["shanghai"]]["due_utc"] == datetime(2027, 5, 5, 23, 30, tzinfo=UTC)
    assert by_contact[ids["london"]]["due_utc"] == datetime(2027, 5, 6, 6, 30, tzinfo=UTC)  # BST
    assert by_contact[ids["newyork"]]["due_utc"] == datetime(2027, 5, 6, 11, 30, tzinfo=UTC)  # EDT
    assert all(r["state"] == "planned" and r["slot"] == "07:30" for r in got)
    assert outcome.written == 4
    assert outcome.summary.left_out == {"no_consent": 1}


async def test_planning_twice_creates_no_second_row(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    await plan(engine, tmp_path, campaign())
    first = await rows(engine)
    outcome = await plan(engine, tmp_path, campaign(), now=NOW + timedelta(minutes=5))
    second = await rows(engine)
    assert [r["id"] for r in first] == [r["id"] for r in second]
    assert [(r["due_utc"], r["state"]) for r in first] == [(r["due_utc"], r["state"]) for r in second]
    assert outcome.retired == {}


async def test_every_slot_plans_each_day_and_slot(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    await plan(engine, tmp_path, campaign(per_recipient="every_slot", slots=["07:30", "17:00"]))
    got = await rows(engine)
    assert len(got) == 4 * 2 * 2  # 4 recipients × 2 days × 2 slots
    assert {r["slot"] for r in got} == {"07:30", "17:00"}


async def test_schedule_edit_replans_planned_rows_and_leaves_claimed_ones(engine, tmp_path) -> None:
    ids = await populate(engine, tmp_path)
    await plan(engine, tmp_path, campaign())
    async with engine.begin() as conn:  # the Shanghai row is already in a dispatcher's hands
        await conn.execute(
            update(deliveries).where(deliveries.c.contact_id == ids["shanghai"]).values(state="claimed")
        )
    outcome = await plan(engine, tmp_path, campaign(slots=["08:00"]))
    got = await rows(engine)
    sh = [r for r in got if r["contact_id"] == ids["shanghai"]]
    assert [(r["slot"], r["state"]) for r in sh] == [("07:30", "claimed")]  # once: no new row for them
    others = [r for r in got if r["contact_id"] != ids["shanghai"]]
    assert sorted((r["slot"], r["state"], r["skip_reason"]) for r in others) == sorted(
        [("07:30", "skipped", "replanned")] * 3 + [("08:00", "planned", None)] * 3
    )
    assert outcome.retired == {"replanned": 3}


async def test_contacts_who_leave_are_skipped_with_the_reason(engine, tmp_path) -> None:
    ids = await populate(engine, tmp_path)
    await plan(engine, tmp_path, campaign())
    await suppress(engine, "ld@example.com")
    # newyork2 withdraws consent; newyork changes gender (leaves the segment)
    await populate(
        engine,
        tmp_path,
        [
            ("newyork2", "ny2@example.com", "female", "America/New_York", "US", "no"),
            ("newyork", "ny@example.com", "male", "America/New_York", "US", "yes"),
        ],
    )
    outcome = await plan(engine, tmp_path, campaign())
    reasons = {r["contact_id"]: (r["state"], r["skip_reason"]) for r in await rows(engine)}
    assert reasons[ids["london"]] == ("skipped", "suppressed")
    assert reasons[ids["newyork2"]] == ("skipped", "no_consent")
    assert reasons[ids["newyork"]] == ("skipped", "left_segment")
    assert reasons[ids["shanghai"]] == ("planned", None)
    assert outcome.retired == {"suppressed": 1, "no_consent": 1, "left_segment": 1}


async def test_once_never_plans_a_second_slot_after_a_send(engine, tmp_path) -> None:
    ids = await populate(engine, tmp_path)
    await plan(engine, tmp_path, campaign(slots=["07:30", "17:00"]))
    async with engine.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.contact_id == ids["london"]).values(state="sent"))
    # later that day: London's 07:30 is long past; without the guard "once" would pick 17:00
    later = datetime(2027, 5, 6, 12, 0, tzinfo=UTC)
    await plan(engine, tmp_path, campaign(slots=["07:30", "17:00"]), now=later)
    london = [r for r in await rows(engine) if r["contact_id"] == ids["london"]]
    assert [(r["slot"], r["state"]) for r in london] == [("07:30", "sent")]


async def test_missed_slot_within_grace_stays_planned_and_after_grace_moves_on(engine, tmp_path) -> None:
    ids = await populate(engine, tmp_path)
    c = campaign(slots=["07:30", "17:00"], missed_slot={"grace": "15m", "then": "next_slot"})
    await plan(engine, tmp_path, c)
    london_due = datetime(2027, 5, 6, 6, 30, tzinfo=UTC)
    # restart 5 minutes after London's 07:30: still sent at once
    await plan(engine, tmp_path, c, now=london_due + timedelta(minutes=5))
    london = {(r["slot_date"].isoformat(), r["slot"]): r["state"] for r in await rows(engine) if r["contact_id"] == ids["london"]}
    assert london == {("2027-05-06", "07:30"): "planned"}
    # restart 2 hours late: the 07:30 is never sent at 09:30; the 17:00 slot takes over
    await plan(engine, tmp_path, c, now=london_due + timedelta(hours=2))
    london = {(r["slot_date"].isoformat(), r["slot"]): (r["state"], r["skip_reason"]) for r in await rows(engine) if r["contact_id"] == ids["london"]}
    assert london[("2027-05-06", "17:00")] == ("planned", None)
    assert london[("2027-05-06", "07:30")] == ("skipped", "missed_slot")


async def test_dispatch_start_is_sized_from_the_bucket(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    s = settings(tmp_path)
    await ledger.record_campaign(engine, campaign(), "hash", NOW)
    await plan_campaign(engine, campaign(), s, NOW, write=True)
    buckets = await ledger.planned_buckets(engine, "ledger-test")
    rate = channel_rates(s, campaign())["email"]
    for b in buckets:
        lead = b.due_utc - b.dispatch_start_utc
        # tiny buckets: the 60 s floor; never earlier than the 10 min window allows
        assert lead == timedelta(seconds=60), (b, rate)
    ny = [b for b in buckets if b.due_utc == datetime(2027, 5, 6, 11, 30, tzinfo=UTC)]
    assert ny[0].count == 2


async def test_dispatch_starts_of_buckets_long_past_their_grace_are_forgotten(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    c = campaign(missed_slot={"grace": "15m", "then": "next_slot"})
    await plan(engine, tmp_path, c)
    rates = channel_rates(settings(tmp_path), c)

    async def kept() -> list[datetime]:
        async with engine.connect() as conn:
            return sorted((await conn.execute(select(dispatch_starts.c.due_utc))).scalars())

    dues = await kept()
    assert len(dues) >= 2
    grace = timedelta(minutes=15)
    await settle_dispatch_starts(engine, c, rates, dues[0] + grace + STARTS_KEPT)  # not yet over
    assert await kept() == dues
    await settle_dispatch_starts(engine, c, rates, dues[0] + grace + STARTS_KEPT + timedelta(seconds=1))
    assert await kept() == dues[1:]  # the earliest bucket's start only


async def test_dry_run_writes_nothing(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    outcome = await plan_campaign(engine, campaign(), settings(tmp_path), NOW, write=False)
    assert outcome.summary.planned_by_channel == {"email": 4}
    assert await rows(engine) == []
