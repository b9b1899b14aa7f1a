"""The bucket scheduler: jobs rebuilt from the ledger, fired on time by APScheduler, claims made."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from scheduling.ledger_fixtures import NOW, campaign, populate, rows, settings, suppress
from topslot.clock import FakeClock
from topslot.scheduling.scheduler import BucketScheduler, job_id
from topslot.store import ledger

NY_DUE = datetime(2027, 5, 6, 11, 30, tzinfo=UTC)


async def test_changed_campaigns_are_planned_and_get_one_job_per_bucket(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    clock = FakeClock(NOW)
    scheduler = BucketScheduler(engine, settings(tmp_path), clock)
    scheduler.start()
    try:
        c = campaign()
        await scheduler.on_campaigns_changed({c.id: c})
        buckets = await ledger.planned_buckets(engine, c.id)
        assert len(buckets) == 3  # Shanghai, London, New York (two people)
        jobs = scheduler.jobs()
        assert set(jobs) == {job_id(c.id, b.channel, b.due_utc) for b in buckets}
        # job times are the dispatch starts, moved onto the wall clock by the fake clock's offset
        offset = datetime.now(UTC) - NOW
        for b in buckets:
            wall = jobs[job_id(c.id, b.channel, b.due_utc)]
            assert abs((wall - (b.dispatch_start_utc + offset)).total_seconds()) < 5

        await scheduler.on_campaigns_changed({})  # the file was removed
        assert scheduler.jobs() == {}
    finally:
        scheduler.shutdown()


async def test_a_restart_rebuilds_the_same_jobs_from_the_ledger(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    c = campaign()
    first = BucketScheduler(engine, settings(tmp_path), FakeClock(NOW))
    first.start()
    await first.on_campaigns_changed({c.id: c})
    before, ledger_before = set(first.jobs()), await rows(engine)
    first.shutdown()

    second = BucketScheduler(engine, settings(tmp_path), FakeClock(NOW + timedelta(minutes=1)))
    second.start()
    try:
        await second.on_campaigns_changed({c.id: c})
        assert set(second.jobs()) == before
        assert [r["id"] for r in await rows(engine)] == [r["id"] for r in ledger_before]
    finally:
        second.shutdown()


async def test_a_due_bucket_fires_claims_its_rows_and_logs_its_lateness(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    c = campaign()
    clock = FakeClock(NOW)
    claimed: list[int] = []

    async def on_claimed(campaign_, channel, due, batch) -> None:  # noqa: ANN001
        claimed.extend(x.delivery_id for x in batch)

    scheduler = BucketScheduler(engine, settings(tmp_path), clock, on_claimed=on_claimed)
    await scheduler.on_campaigns_changed({c.id: c})
    ny = next(b for b in await ledger.planned_buckets(engine, c.id) if b.due_utc == NY_DUE)
    clock.set(ny.dispatch_start_utc - timedelta(seconds=0.3))  # 0.3 s before New York's dispatch
    await suppress(engine, "ny2@example.com")  # unsubscribed after planning, before the claim
    with capture_logs() as logs:
        scheduler.start()
        await scheduler.rebuild_jobs()
        for _ in range(100):  # the Shanghai and London buckets are overdue: they fire at once too
            if len(claimed) >= 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
    scheduler.shutdown()
    states = {r["contact_id"]: (r["state"], r["skip_reason"]) for r in await rows(engine)}
    assert sorted(s for s in states.values()) == sorted(
        [("claimed", None)] * 3 + [("skipped", "suppressed")]
    )
    assert len(claimed) == 3
    started = [e for e in logs if e["event"] == "bucket_started" and e["due_utc"] == NY_DUE.isoformat()]
    assert len(started) == 1 and started[0]["skipped"] == {"suppressed": 1}
    assert started[0]["lateness_s"] < 5


async def test_fire_bucket_of_an_unknown_campaign_claims_nothing(engine, tmp_path) -> None:
    scheduler = BucketScheduler(engine, settings(tmp_path), FakeClock(NOW))
    assert await scheduler.fire_bucket("gone", "email", NY_DUE) == 0
