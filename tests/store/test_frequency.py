"""Frequency caps at claim time: the authoritative check, in the claim's own transaction, also
with two nodes claiming different campaigns' rows for the same contacts at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, timedelta

import pytest
from scheduling.cap_fixtures import cap, capped_settings, claim_everything, named, record, set_state, states
from scheduling.ledger_fixtures import NOW, populate
from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.scheduling.plan_run import plan_campaign
from topslot.store import ledger
from topslot.store.db import open_engine
from topslot.store.dispatch import claim_retries
from topslot.store.schema import deliveries

MAY_6, MAY_7 = date(2027, 5, 6), date(2027, 5, 7)
HOUR = timedelta(hours=1)


async def two_planned(engine: AsyncEngine, tmp_path, people=None):  # noqa: ANN001, ANN201
    """camp-a (6 May) and camp-b (7 May) for the same contacts, both planned while no cap was set."""
    ids = await populate(engine, tmp_path, *([people] if people else []))
    a, b = named("camp-a", MAY_6), named("camp-b", MAY_7)
    await record(engine, a, b)
    for c in (a, b):
        await plan_campaign(engine, c, capped_settings(tmp_path, None), NOW, write=True)
    return ids, a, b


async def sent_to(engine: AsyncEngine, campaign_id: str, *contact_ids: int, state: str = "sent") -> None:
    """The campaign's rows of ``contact_ids`` in ``state`` (its message went out)."""
    mine = and_(deliveries.c.campaign_id == campaign_id, deliveries.c.contact_id.in_(contact_ids))
    async with engine.begin() as conn:
        await conn.execute(update(deliveries).where(mine).values(state=state))


async def test_a_claim_skips_the_contacts_another_campaign_sent_to(engine, tmp_path) -> None:
    ids, a, b = await two_planned(engine, tmp_path)
    london = next(x for x in await ledger.planned_buckets(engine, a.id) if x.due_utc.hour == 6)
    got = await ledger.claim_bucket(engine, a.id, "email", london.due_utc, owner="n", lease=HOUR, now=NOW)
    assert [c.contact_id for c in got] == [ids["london"]]
    await sent_to(engine, a.id, ids["london"])

    assert await claim_everything(engine, b, cap(1)) == 3
    got_b = await states(engine, b.id)
    assert got_b.pop(ids["london"]) == ("skipped", "frequency_cap")
    assert set(got_b.values()) == {("claimed", None)}


async def test_claimed_rows_count_and_a_row_does_not_count_against_itself(engine, tmp_path) -> None:
    ids, a, b = await two_planned(engine, tmp_path)
    assert await claim_everything(engine, a, cap(1)) == 4  # nothing else counted yet: all pass
    assert await claim_everything(engine, b, cap(2)) == 4  # one in flight each, two allowed
    assert set((await states(engine, b.id)).values()) == {("claimed", None)}


async def test_an_exempt_campaign_claims_everything(engine, tmp_path) -> None:
    ids, a, b = await two_planned(engine, tmp_path)
    await claim_everything(engine, a, cap(1))
    assert await claim_everything(engine, b, None) == 4


async def test_a_whole_batch_over_the_cap_does_not_stop_the_claim(engine, tmp_path) -> None:
    people = [(f"p{i}", f"p{i}@example.com", "female", "Asia/Shanghai", "CN", "yes") for i in range(12)]
    ids, a, b = await two_planned(engine, tmp_path, people)
    await sent_to(engine, a.id, *sorted(ids.values())[:8], state="delivered")  # the first 8, in id order
    (bucket,) = await ledger.planned_buckets(engine, b.id)
    got = await ledger.claim_bucket(
        engine, b.id, "email", bucket.due_utc, owner="n", lease=HOUR, now=NOW, limit=4, cap=cap(1)
    )
    assert sorted(c.contact_id for c in got) == sorted(ids.values())[8:]  # two batches skipped whole first
    assert Counter((await states(engine, b.id)).values()) == {("skipped", "frequency_cap"): 8, ("claimed", None): 4}


async def test_a_retry_is_skipped_when_another_campaign_sent_since_its_first_attempt(engine, tmp_path) -> None:
    ids, a, b = await two_planned(engine, tmp_path)
    await set_state(engine, a.id, "retry_wait", next_attempt_utc=NOW)
    await sent_to(engine, b.id, ids["london"])
    got = await claim_retries(engine, "n", HOUR, NOW, cap_of=lambda campaign_id, channel: cap(1))
    assert sorted(c.contact_id for *_, c in got) == sorted(ids[k] for k in ("shanghai", "newyork", "newyork2"))
    assert (await states(engine, a.id))[ids["london"]] == ("skipped", "frequency_cap")


async def test_a_retry_without_a_cap_is_claimed(engine, tmp_path) -> None:
    ids, a, b = await two_planned(engine, tmp_path)
    await set_state(engine, a.id, "retry_wait", next_attempt_utc=NOW)
    await set_state(engine, b.id, "sent")
    assert len(await claim_retries(engine, "n", HOUR, NOW)) == 4
    assert await claim_retries(engine, "n", HOUR, NOW, cap_of=lambda campaign_id, channel: None) == []  # taken


@pytest.fixture
async def second_node(engine: AsyncEngine, request: pytest.FixtureRequest, tmp_path):  # noqa: ANN001, ANN201
    """Another engine on the same database: a second node's connection pool."""
    if engine.dialect.name == "postgresql":
        url, schema = request.getfixturevalue("pg_migrated_schema")
        other = open_engine(url, schema=schema)
    else:
        other = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'topslot.db'}")
    try:
        yield other
    finally:
        await other.dispose()


@pytest.mark.parametrize("max_", [1, 2])
async def test_two_nodes_claiming_two_campaigns_at_once_send_at_most_the_cap(
    engine, second_node, tmp_path, max_
) -> None:
    """Each node claims both campaigns' buckets (in opposite orders), in small batches, at the same
    time: per contact exactly ``max`` messages are claimed in all (both when it is 2)."""
    people = [(f"p{i}", f"p{i}@example.com", "female", "Asia/Shanghai", "CN", "yes") for i in range(150)]
    ids, a, b = await two_planned(engine, tmp_path, people)
    limit = cap(max_)
    buckets = {c.id: (await ledger.planned_buckets(engine, c.id))[0].due_utc for c in (a, b)}

    async def node(eng: AsyncEngine, name: str, order: list[str]) -> None:
        for campaign_id in order:
            while await ledger.claim_bucket(
                eng, campaign_id, "email", buckets[campaign_id], owner=name, lease=HOUR, now=NOW, limit=3, cap=limit
            ):
                await asyncio.sleep(0)

    await asyncio.gather(node(engine, "node-1", [a.id, b.id]), node(second_node, "node-2", [b.id, a.id]))
    async with engine.connect() as conn:
        result = await conn.execute(select(deliveries.c.contact_id, deliveries.c.state, deliveries.c.skip_reason))
        got = result.all()
    per_contact = Counter(r.contact_id for r in got if r.state == "claimed")
    assert per_contact == {contact: max_ for contact in ids.values()}
    assert {(r.state, r.skip_reason) for r in got} <= {("claimed", None), ("skipped", "frequency_cap")}
