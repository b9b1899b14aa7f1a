"""Tracking events in the store: delivery facts, labels, and the unsubscribe transaction."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from scheduling.ledger_fixtures import NOW
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from tracking.fixtures import SENT_AT, make_world, stored_events

from topslot.store import tracking_events as te
from topslot.store.schema import consents, contacts, deliveries, suppressions


async def test_delivery_facts_give_the_hand_over_time_of_sent_rows_only(engine: AsyncEngine, tmp_path: Path) -> None:
    world = await make_world(engine, tmp_path)
    ids = [world.delivery["newyork"], world.delivery["london"], 424242]
    async with engine.connect() as conn:
        facts = await conn.run_sync(te.delivery_facts, ids)
    assert set(facts) == set(ids[:2])
    assert facts[ids[0]] == te.DeliveryFacts(world.campaign.id, "email", SENT_AT)
    assert facts[ids[1]].handed_over_at is None  # still planned
    assert await te.delivery_campaign(engine, ids[0]) == world.campaign.id
    assert await te.delivery_campaign(engine, 424242) is None


async def test_insert_relabel_and_count(engine: AsyncEngine, tmp_path: Path) -> None:
    world = await make_world(engine, tmp_path)
    d = world.delivery["newyork"]
    row = {"delivery_id": d, "campaign_id": world.campaign.id, "kind": "open", "occurred_at": SENT_AT, "method": "GET"}
    async with engine.begin() as conn:
        await te.insert_events(
            conn,
            [
                {**row, "label": "machine_open", "reason": "no_user_agent"},
                {**row, "kind": "click", "label": "human", "reason": "x"},
            ],
        )
    [first, second] = await stored_events(engine)
    async with engine.begin() as conn:
        await conn.run_sync(te.set_labels, [(first["id"], "human", "upgraded_by_click")])
        opens = await conn.run_sync(te.opens_of, [d])
        recent = await conn.run_sync(te.recent_clicks, [d], SENT_AT - timedelta(seconds=1))
        old = await conn.run_sync(te.recent_clicks, [d], SENT_AT + timedelta(seconds=1))
        links = await conn.run_sync(te.recent_click_links, [d, 424242], SENT_AT - timedelta(seconds=1))
        no_links = await conn.run_sync(te.recent_click_links, [d], SENT_AT + timedelta(seconds=1))
    assert [(o.id, o.label) for o in opens] == [(first["id"], "human")]
    async with engine.connect() as conn:
        assert await conn.run_sync(te.with_open_labelled, [d, 424242], "human") == {d}
        assert await conn.run_sync(te.with_open_labelled, [d], "machine_open") == set()
        assert await conn.run_sync(te.opens_of, [d], "machine_open") == []
    assert [c.id for c in recent] == [second["id"]] and old == []
    assert links == {d: {None}} and no_links == {}  # the one click has no link; the other delivery none
    assert await te.event_counts(engine, campaign_id=world.campaign.id) == {("open", "human"): 1, ("click", "human"): 1}
    assert await te.event_counts(engine, since_id=first["id"]) == {("click", "human"): 1}
    assert await te.last_event_id(engine) == second["id"]


async def test_unsubscribe_is_idempotent_and_keeps_the_first_withdrawal(engine: AsyncEngine, tmp_path: Path) -> None:
    world = await make_world(engine, tmp_path)
    d = world.delivery["newyork"]
    async with engine.begin() as conn:  # the address as the contact typed it: suppressions store it lower-cased
        await conn.execute(
            update(contacts).where(contacts.c.id == world.people["newyork"]).values(email="NY@Example.com")
        )
    first = await te.unsubscribe(engine, d, NOW, user_agent="UA", ip="192.0.2.1")
    again = await te.unsubscribe(engine, d, NOW + timedelta(days=1))
    assert first == te.Unsubscribed(world.campaign.id, "email", world.people["newyork"], first=True, suppressed=1)
    assert again is not None and (again.first, again.suppressed) == (False, 0)
    async with engine.connect() as conn:
        [s] = (await conn.execute(select(suppressions))).all()
        consent = (await conn.execute(select(consents).where(consents.c.contact_id == world.people["newyork"]))).one()
    assert (s.channel, s.address, s.reason, s.source) == ("email", "ny@example.com", "unsubscribe", f"delivery:{d}")
    assert (consent.granted, consent.source, consent.recorded_at) == (False, "unsubscribe", NOW)
    [event] = await stored_events(engine)
    assert (event["kind"], event["campaign_id"], event["ip"], event["label"]) == (
        "unsubscribe",
        world.campaign.id,
        "192.0.2.1",
        None,
    )
    assert await te.unsubscribe(engine, 987_654, NOW) is None


async def test_unsubscribe_without_an_address_still_withdraws_consent(engine: AsyncEngine, tmp_path: Path) -> None:
    world = await make_world(engine, tmp_path)
    async with engine.begin() as conn:
        await conn.execute(update(contacts).where(contacts.c.id == world.people["london"]).values(email=None))
    done = await te.unsubscribe(engine, world.delivery["london"], NOW)
    assert done is not None and done.suppressed == 0
    async with engine.connect() as conn:
        assert (await conn.execute(select(suppressions))).all() == []
        granted = await conn.scalar(select(consents.c.granted).where(consents.c.contact_id == world.people["london"]))
    assert granted is False


async def test_deliveries_table_is_untouched_by_unsubscribe(engine: AsyncEngine, tmp_path: Path) -> None:
    world = await make_world(engine, tmp_path)
    async with engine.connect() as conn:
        before = (await conn.execute(select(deliveries).order_by(deliveries.c.id))).all()
    await te.unsubscribe(engine, world.delivery["newyork"], NOW)
    async with engine.connect() as conn:
        after = (await conn.execute(select(deliveries).order_by(deliveries.c.id))).all()
    assert after == before  # the ledger learns at the next claim (skip_ineligible), never from here
