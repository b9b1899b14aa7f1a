"""Ledger claims: leases, one owner per row, concurrent claimers never overlap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from scheduling.ledger_fixtures import NOW, campaign, populate, rows, settings, suppress
from sqlalchemy import func, select

from topslot.scheduling.plan_run import plan_campaign
from topslot.store import ledger
from topslot.store.schema import deliveries

NY_DUE = datetime(2027, 5, 6, 11, 30, tzinfo=UTC)


async def planned(engine, tmp_path, c=None):  # noqa: ANN001, ANN201
    c = c or campaign()
    await populate(engine, tmp_path)
    await ledger.record_campaign(engine, c, "hash", NOW)
    await plan_campaign(engine, c, settings(tmp_path), NOW, write=True)
    return c


async def test_claim_takes_a_bucket_once_with_a_lease(engine, tmp_path) -> None:
    await planned(engine, tmp_path)
    got = await ledger.claim_bucket(
        engine, "ledger-test", "email", NY_DUE, owner="node-a", lease=timedelta(minutes=5), now=NOW
    )
    assert len(got) == 2 and all(c.lease_epoch == 1 for c in got)
    again = await ledger.claim_bucket(
        engine, "ledger-test", "email", NY_DUE, owner="node-b", lease=timedelta(minutes=5), now=NOW
    )
    assert again == []
    claimed = [r for r in await rows(engine) if r["state"] == "claimed"]
    assert {r["lease_owner"] for r in claimed} == {"node-a"}
    assert {r["lease_expires_utc"] for r in claimed} == {NOW + timedelta(minutes=5)}
    assert {r["due_utc"] for r in claimed} == {NY_DUE}


async def test_claim_in_batches_respects_the_limit(engine, tmp_path) -> None:
    await planned(engine, tmp_path)
    first = await ledger.claim_bucket(engine, "ledger-test", "email", NY_DUE, owner="a", lease=timedelta(1), now=NOW, limit=1)
    second = await ledger.claim_bucket(engine, "ledger-test", "email", NY_DUE, owner="a", lease=timedelta(1), now=NOW, limit=1)
    assert len(first) == len(second) == 1 and first[0].delivery_id != second[0].delivery_id


async def test_skip_ineligible_in_bucket_honours_an_unsubscribe_before_the_claim(engine, tmp_path) -> None:
    c = await planned(engine, tmp_path)
    await suppress(engine, "ny@example.com")
    skipped = await ledger.skip_ineligible_in_bucket(engine, c, "email", NY_DUE, NOW)
    assert skipped == {"suppressed": 1}
    got = await ledger.claim_bucket(engine, c.id, "email", NY_DUE, owner="a", lease=timedelta(1), now=NOW)
    assert len(got) == 1


async def test_concurrent_claimers_never_share_a_row(engine, tmp_path) -> None:
    """Several connections claim the same big bucket at once: every row goes to exactly one of them."""
    c = campaign(timezone="Asia/Shanghai")  # one bucket for everybody
    people = [(f"p{i}", f"p{i}@example.com", "female", "Asia/Shanghai", "CN", "yes") for i in range(400)]
    await populate(engine, tmp_path, people)
    await ledger.record_campaign(engine, c, "hash", NOW)
    await plan_campaign(engine, c, settings(tmp_path), NOW, write=True)
    due = (await ledger.planned_buckets(engine, c.id))[0].due_utc

    async def worker(name: str) -> list[int]:
        # each task checks out its own pooled connection: real concurrent transactions
        mine: list[int] = []
        while batch := await ledger.claim_bucket(engine, c.id, "email", due, owner=name, lease=timedelta(1), now=NOW, limit=25):
            mine += [x.delivery_id for x in batch]
            await asyncio.sleep(0)
        return mine

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    claimed = [d for r in results for d in r]
    assert len(claimed) == len(set(claimed)) == 400
    async with engine.connect() as conn:
        per_owner = dict((await conn.execute(
            select(deliveries.c.lease_owner, func.count()).group_by(deliveries.c.lease_owner)
        )).all())
    assert sum(per_owner.values()) == 400
    assert per_owner == {f"w{i}": len(results[i]) for i in range(4) if results[i]}

