"""Campaign controls against the real ledger (SQLite and PostgreSQL): a pause stops claiming within
one batch and leaves rows planned, a resume goes on, a cancel retires unsent rows with their coupon
codes and is never re-planned; ``topslot status`` reads heartbeats, buckets, rows in flight and
failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update
from structlog.testing import capture_logs

from scheduling.ledger_fixtures import NOW, campaign, populate, rows, settings
from topslot.clock import FakeClock
from topslot.dispatch import claims
from topslot.dispatch.claims import claim_all
from topslot.scheduling.scheduler import BucketScheduler
from topslot.store import controls, ledger, status
from topslot.store.controls import ControlRefused, ControlState
from topslot.store.dispatch import claim_retries
from topslot.store.schema import campaign_controls, coupon_codes, coupon_pools, deliveries


def one_bucket():  # every recipient at 07:30 UTC: one bucket of four rows
    return campaign(timezone="UTC")


async def planned(engine, tmp_path):
    await populate(engine, tmp_path)
    c = one_bucket()
    scheduler = BucketScheduler(engine, settings(tmp_path), FakeClock(NOW))
    await scheduler.on_campaigns_changed({c.id: c})
    [bucket] = await ledger.planned_buckets(engine, c.id)
    assert bucket.count == 4
    return c, scheduler, bucket


async def test_a_pause_stops_claiming_mid_bucket_and_resume_goes_on(engine, tmp_path, monkeypatch) -> None:
    c, _, bucket = await planned(engine, tmp_path)
    monkeypatch.setattr(claims, "CLAIM_BATCH", 1)
    clock = FakeClock(bucket.dispatch_start_utc)
    batches: list[int] = []

    async def pause_after_first(campaign_, channel, due, batch) -> None:  # noqa: ANN001
        batches.append(len(batch))
        if len(batches) == 1:  # paused from elsewhere while the bucket is being claimed
            await controls.pause(engine, c.id, now=clock.now(), reason="wrong price", who="ops@test")

    kwargs = {"owner": "node/a", "lease": timedelta(minutes=5), "clock": clock, "stopped": lambda: False}
    with capture_logs() as logs:
        n = await claim_all(engine, c, "email", bucket.due_utc, on_claimed=pause_after_first, **kwargs)
    assert n == 1 and batches == [1]
    states = sorted(r["state"] for r in await rows(engine) if r["skip_reason"] is None)
    assert states == ["claimed", "planned", "planned", "planned"]
    assert [e["state"] for e in logs if e["event"] == "claims_held"] == ["paused"]
    assert await claim_all(engine, c, "email", bucket.due_utc, on_claimed=None, **kwargs) == 0  # any node

    again = await controls.pause(engine, c.id, now=clock.now())
    assert not again.changed  # idempotent
    assert (await controls.resume(engine, c.id, now=clock.now(), who="ops@test")).changed
    assert await claim_all(engine, c, "email", bucket.due_utc, on_claimed=None, **kwargs) == 3
    async with engine.connect() as conn:
        log = [(r.action, r.reason, r.actor) for r in await conn.execute(select(campaign_controls))]
    assert log == [("pause", "wrong price", "ops@test"), ("resume", None, "ops@test")]


async def test_a_held_bucket_fires_nothing_and_retries_of_a_paused_campaign_wait(engine, tmp_path) -> None:
    c, scheduler, bucket = await planned(engine, tmp_path)
    await controls.pause(engine, c.id, now=NOW)
    with capture_logs() as logs:
        await scheduler.watch_controls()
        assert await scheduler.fire_bucket(c.id, "email", bucket.due_utc) == 0
        await scheduler.watch_controls()  # no change: logged once
    assert [e["event"] for e in logs if e["event"] in ("campaign_paused", "bucket_held")] == [
        "campaign_paused",
        "bucket_held",
    ]
    async with engine.begin() as conn:  # one row waiting for a retry
        first = min(r["id"] for r in await rows(engine) if r["state"] == "planned")
        await conn.execute(
            update(deliveries).where(deliveries.c.id == first).values(state="retry_wait", next_attempt_utc=NOW)
        )
    later = bucket.due_utc + timedelta(hours=1)
    assert await claim_retries(engine, "node/a", timedelta(minutes=5), later) == []
    await controls.resume(engine, c.id, now=NOW)
    with capture_logs() as logs:
        await scheduler.watch_controls()  # noticed: re-planned, its bucket's job back
    events = [e["event"] for e in logs]
    assert "campaign_resumed" in events and events.index("campaign_planned") > events.index("campaign_resumed")
    assert any(e["event"] == "jobs_rebuilt" and e["buckets"] == 1 for e in logs)
    assert len(await claim_retries(engine, "node/a", timedelta(minutes=5), later)) == 1


async def test_cancel_retires_unsent_rows_releases_coupons_and_is_never_replanned(engine, tmp_path) -> None:
    c, scheduler, bucket = await planned(engine, tmp_path)
    ids = sorted(r["id"] for r in await rows(engine) if r["state"] == "planned")
    sent, waiting = ids[0], ids[1]
    contact_of = {r["id"]: r["contact_id"] for r in await rows(engine)}
    async with engine.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.id == sent).values(state="sent", coupon_code="A1"))
        await conn.execute(
            update(deliveries).where(deliveries.c.id == waiting).values(state="retry_wait", coupon_code="B2")
        )
        await conn.execute(insert(coupon_pools).values(name="p", total=2, available=0, created_at=NOW, updated_at=NOW))
        await conn.execute(
            insert(coupon_codes),
            [
                {"pool": "p", "code": "A1", "campaign_id": c.id, "contact_id": contact_of[sent], "state": "assigned",
                 "reserved_at": NOW, "assigned_at": NOW},
                {"pool": "p", "code": "B2", "campaign_id": c.id, "contact_id": contact_of[waiting],
                 "state": "reserved", "reserved_at": NOW, "assigned_at": None},
            ],
        )  # fmt: skip
    result = await controls.cancel(engine, c.id, now=NOW, reason="recalled", who="ops@test")
    assert (result.state, result.changed, result.rows, result.coupons_released) == (ControlState.CANCELLED, True, 3, 1)
    states = {r["id"]: (r["state"], r["skip_reason"]) for r in await rows(engine) if r["id"] in ids}
    assert states[sent] == ("sent", None)
    assert all(states[i] == ("skipped", "cancelled") for i in ids[1:])
    async with engine.connect() as conn:
        codes = {r.code: (r.state, r.contact_id) for r in await conn.execute(select(coupon_codes))}
        pool = (await conn.execute(select(coupon_pools.c.available))).scalar_one()
    assert codes["A1"][0] == "assigned" and codes["B2"] == ("available", None) and pool == 1

    before = await rows(engine)
    with capture_logs() as logs:
        await scheduler.plan(c)  # a re-plan (periodic, or the file edited) revives nothing
        await scheduler.replan_all()
    assert await rows(engine) == before
    assert any(e["event"] == "campaign_not_planned" for e in logs)
    again = await controls.cancel(engine, c.id, now=NOW)
    assert (again.changed, again.rows) == (False, 0)
    with pytest.raises(ControlRefused):
        await controls.resume(engine, c.id, now=NOW)
    with pytest.raises(ControlRefused):
        await controls.pause(engine, "nope", now=NOW)
    # a row a recovered lease gave back after the cancel is retired when its bucket comes due
    async with engine.begin() as conn:
        revived = update(deliveries).where(deliveries.c.id == ids[2]).values(state="planned", skip_reason=None)
        await conn.execute(revived)
    assert await scheduler.fire_bucket(c.id, "email", bucket.due_utc) == 0
    assert {r["state"] for r in await rows(engine) if r["id"] in ids[1:]} == {"skipped"}


async def test_status_shows_heartbeats_buckets_in_flight_and_failures(engine, tmp_path) -> None:
    c, _, bucket = await planned(engine, tmp_path)
    now = NOW
    await status.heartbeat(engine, owner="n1/abc", node="n1", role="daemon", pid=10, version="0.1.0", started_at=now,
                           now=now)  # fmt: skip
    await status.heartbeat(engine, owner="n2/def", node="n2", role="helper", pid=11, version="0.1.0", started_at=now,
                           now=now - timedelta(minutes=5))  # fmt: skip
    await status.heartbeat(engine, owner="n3/ghi", node="n3", role="daemon", pid=12, version="0.1.0", started_at=now,
                           now=now)  # fmt: skip
    await status.stopped(engine, "n3/ghi", now)
    ids = sorted(r["id"] for r in await rows(engine) if r["state"] == "planned")
    async with engine.begin() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.id.in_(ids[:2]))
            .values(state="claimed", lease_owner="n1/abc", lease_expires_utc=now + timedelta(minutes=15))
        )  # fmt: skip
        await conn.execute(
            update(deliveries).where(deliveries.c.id == ids[2])
            .values(state="failed", last_error="550 5.1.1 no such user", updated_at=now - timedelta(hours=1))
        )  # fmt: skip
    await status.record_bucket(engine, campaign_id=c.id, channel="email", due_utc=bucket.due_utc - timedelta(days=1),
                               owner="n1/abc", claimed=10, accepted=9, late=2, max_late_s=3.25, started_at=now,
                               finished_at=now)  # fmt: skip
    await controls.pause(engine, c.id, now=now, reason="check copy", who="ops@test")

    found = await status.read_status(engine, now, dead_after=timedelta(seconds=30))
    health = {p.owner: p.health for p in found.processes}
    assert health == {"n1/abc": "running", "n2/def": "dead", "n3/ghi": "stopped"}
    [row] = found.campaigns
    assert (row.state, row.reason, row.since) == (ControlState.PAUSED, "check copy", now)
    assert row.rows == {"planned": 1, "claimed": 2, "failed": 1}
    assert [(b.channel, b.due_utc, b.rows) for b in row.next_buckets] == [("email", bucket.due_utc, 1)]
    assert [(f.owner, f.state, f.rows) for f in found.in_flight] == [("n1/abc", "claimed", 2)]
    assert [(f.state, f.error, f.rows) for f in found.failures] == [("failed", "550 5.1.1 no such user", 1)]
    [b] = found.buckets
    assert (b.claimed, b.accepted, b.late, b.max_late_s) == (10, 9, 2, 3.25)
    assert [(e.action, e.reason) for e in found.controls] == [("pause", "check copy")]


async def test_a_dispatch_service_keeps_a_heartbeat_and_says_when_it_stopped(engine, tmp_path) -> None:
    from topslot.dispatch.service import DispatchService

    service = DispatchService(engine, settings(tmp_path), FakeClock(NOW), node="nodeA")
    await service.start_heartbeat()  # the first beat is written before it returns
    [proc] = (await status.read_status(engine, service.wall.now(), dead_after=timedelta(seconds=30))).processes
    assert (proc.owner, proc.node, proc.role, proc.health) == (service.owner, "nodeA", "daemon", "running")
    await service.close()
    [proc] = (await status.read_status(engine, service.wall.now(), dead_after=timedelta(seconds=30))).processes
    assert proc.health == "stopped"
