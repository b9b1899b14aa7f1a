"""Frequency caps across campaigns, at plan time and through the daemon's scheduler (fake clock)."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from sqlalchemy import insert, select, update
from structlog.testing import capture_logs

from scheduling.cap_fixtures import cap, capped_settings, named, record, states
from scheduling.ledger_fixtures import NOW, populate
from topslot.clock import FakeClock
from topslot.planning import summary_lines
from topslot.scheduling.plan_run import plan_campaign
from topslot.scheduling.scheduler import BucketScheduler
from topslot.store import ledger
from topslot.store.schema import deliveries

MAY_6, MAY_7 = date(2027, 5, 6), date(2027, 5, 7)


async def test_a_cap_counts_the_other_campaigns_planned_rows_first_planned_first_served(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    s = capped_settings(tmp_path, cap(1))
    a, b, later = named("camp-a", MAY_6), named("camp-b", MAY_7), named("camp-later", date(2027, 5, 20))
    await record(engine, a, b, later)
    await plan_campaign(engine, a, s, NOW, write=True)

    dry = await plan_campaign(engine, b, s, NOW, write=False)  # what topslot plan shows
    assert dry.summary.planned_by_channel == {}
    assert dry.summary.left_out["frequency_cap"] == 4
    assert dry.summary.frequency_caps == {"email": "1 per 7d"} and dry.summary.frequency_capped == {"email": 4}
    assert "frequency caps: email 1 per 7d (4 left out)" in summary_lines(dry.summary, channels=["email"])

    await plan_campaign(engine, b, s, NOW, write=True)
    assert set((await states(engine, "camp-b")).values()) == {("skipped", "frequency_cap")}
    await plan_campaign(engine, a, s, NOW, write=True)  # a re-plan of the first one keeps its rows
    assert set((await states(engine, "camp-a")).values()) == {("planned", None)}

    outcome = await plan_campaign(engine, later, s, NOW, write=True)  # two weeks on: outside the period
    assert outcome.summary.planned_by_channel == {"email": 4} and outcome.summary.frequency_capped == {"email": 0}


async def test_without_caps_nothing_is_counted(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    s = capped_settings(tmp_path, None)
    a, b = named("camp-a", MAY_6), named("camp-b", MAY_7)
    await record(engine, a, b)
    await plan_campaign(engine, a, s, NOW, write=True)
    outcome = await plan_campaign(engine, b, s, NOW, write=True)
    assert outcome.summary.planned_by_channel == {"email": 4}
    assert outcome.summary.frequency_caps == {} and "frequency_cap" not in outcome.summary.left_out


async def test_a_campaign_override_replaces_the_settings_cap_and_null_exempts(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    s = capped_settings(tmp_path, cap(1))
    a = named("camp-a", MAY_6)
    roomier = named("camp-roomier", MAY_7, override=cap(2))
    exempt = named("camp-exempt", MAY_7, override=None)
    stricter = named("camp-stricter", date(2027, 5, 20), override=cap(1, timedelta(days=30)))
    await record(engine, a, roomier, exempt, stricter)
    await plan_campaign(engine, a, s, NOW, write=True)
    await plan_campaign(engine, roomier, s, NOW, write=True)  # 2 per 7d: one more each
    assert set((await states(engine, "camp-roomier")).values()) == {("planned", None)}
    exempt_plan = await plan_campaign(engine, exempt, s, NOW, write=True)
    assert set((await states(engine, "camp-exempt")).values()) == {("planned", None)}
    assert exempt_plan.summary.frequency_caps == {}
    await plan_campaign(engine, stricter, s, NOW, write=True)  # 1 per 30d: the others are too close
    assert set((await states(engine, "camp-stricter")).values()) == {("skipped", "frequency_cap")}


async def test_an_every_slot_campaign_is_capped_by_itself(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    s = capped_settings(tmp_path, cap(3))
    c = named("camp-every", MAY_6, slots=["07:30", "19:30"], per_recipient="every_slot")
    c = c.model_copy(update={"schedule": c.schedule.model_copy(update={"end": date(2027, 5, 7)})})
    await record(engine, c)
    outcome = await plan_campaign(engine, c, s, NOW, write=True)
    counts = await ledger.state_counts(engine, c.id)
    assert counts == {("planned", None): 12, ("skipped", "frequency_cap"): 4}  # 4 slots each, 3 kept
    assert outcome.summary.frequency_capped == {"email": 4}
    async with engine.connect() as conn:  # the last slot is the one left out
        late = await conn.execute(
            select(deliveries.c.slot_date, deliveries.c.slot).where(deliveries.c.skip_reason == "frequency_cap")
        )
        assert {(r.slot_date, r.slot) for r in late} == {(date(2027, 5, 7), "19:30")}


async def test_a_capped_row_comes_back_when_the_other_message_is_gone(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    s = capped_settings(tmp_path, cap(1))
    a, b = named("camp-a", MAY_6), named("camp-b", MAY_7)
    await record(engine, a, b)
    await plan_campaign(engine, a, s, NOW, write=True)
    await plan_campaign(engine, b, s, NOW, write=True)
    async with engine.begin() as conn:  # camp-a's rows are retired (e.g. its contacts left its segment)
        await conn.execute(update(deliveries).where(deliveries.c.campaign_id == "camp-a").values(
            state="skipped", skip_reason="left_segment"))  # fmt: skip
    await plan_campaign(engine, b, s, NOW + timedelta(minutes=5), write=True)
    assert set((await states(engine, "camp-b")).values()) == {("planned", None)}


async def test_the_daemon_skips_at_claim_time_what_another_campaign_sent_since_the_plan(engine, tmp_path) -> None:
    """camp-b is planned while nothing else is; then another campaign's message reaches the London
    contact; when camp-b's buckets fire, that contact's row is skipped, the others are claimed."""
    ids = await populate(engine, tmp_path)
    s = capped_settings(tmp_path, cap(1))
    b, other = named("camp-b", MAY_6), named("camp-other", MAY_6)
    await record(engine, b, other)
    clock = FakeClock(NOW)
    claimed: list[int] = []

    async def on_claimed(campaign_, channel, due, batch) -> None:  # noqa: ANN001
        claimed.extend(x.contact_id for x in batch)

    scheduler = BucketScheduler(engine, s, clock, on_claimed=on_claimed)
    await scheduler.on_campaigns_changed({b.id: b})
    assert set((await states(engine, b.id)).values()) == {("planned", None)}
    async with engine.begin() as conn:  # sent by another node since: a day before camp-b's slot
        await conn.execute(insert(deliveries).values(
            campaign_id=other.id, contact_id=ids["london"], channel="email", slot_date=date(2027, 5, 5), slot="07:30",
            due_utc=NOW + timedelta(hours=6), timezone="Europe/London",
            tz_source="contact", state="sent", created_at=NOW, updated_at=NOW,
        ))  # fmt: skip
    clock.set(max(x.dispatch_start_utc for x in await ledger.planned_buckets(engine, b.id)))
    with capture_logs() as logs:
        scheduler.start()
        await scheduler.rebuild_jobs()
        for _ in range(200):  # every bucket is due now: they fire at once
            if not await ledger.planned_buckets(engine, b.id):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
    scheduler.shutdown()
    got = await states(engine, b.id)
    assert got[ids["london"]] == ("skipped", "frequency_cap")
    assert sorted(claimed) == sorted(ids[k] for k in ("shanghai", "newyork", "newyork2"))
    capped = [e for e in logs if e["event"] == "frequency_capped"]
    assert len(capped) == 1 and capped[0]["skipped"] == 1 and capped[0]["cap"] == "1 per 7d"
