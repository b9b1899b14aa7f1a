"""EventWriter against the real databases: labels stored, bursts across batches, upgrades, unknown deliveries."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store import tracking_events as store
from topslot.store.db import sync_sqlite_engine
from topslot.store.links import find_link
from topslot.tracking.hits import Hit
from topslot.tracking.ingest import EventWriter
from tracking.fixtures import SENT_AT, World, make_world, stored_events

LATER = SENT_AT + timedelta(hours=1)
FIREFOX = "Mozilla/5.0 Firefox/128.0"


@pytest.fixture
async def world(engine: AsyncEngine, tmp_path: Path) -> World:
    return await make_world(engine, tmp_path)


async def link_ids(world: World) -> tuple[int, int]:
    landing = await find_link(world.engine, world.campaign.id, world.landing_key)
    faq = await find_link(world.engine, world.campaign.id, world.faq_key)
    assert landing and faq
    return landing.id, faq.id


def click(world: World, link_id: int, at: datetime, who: str = "newyork", method: str = "GET") -> Hit:
    return Hit("click", world.delivery[who], at, method, FIREFOX, None, "198.51.100.7", world.campaign.id, link_id)


def open_(world: World, at: datetime, ua: str = FIREFOX, who: str = "newyork") -> Hit:
    return Hit("open", world.delivery[who], at, "GET", ua, None, "198.51.100.7")


async def test_a_burst_within_one_batch_is_a_scanner(world: World) -> None:
    landing, faq = await link_ids(world)
    writer = EventWriter(world.engine)
    result = await writer([click(world, landing, LATER), click(world, faq, LATER + timedelta(milliseconds=400))])
    assert (result.written, result.unknown) == (2, 0)
    assert [(e["label"], e["reason"]) for e in await stored_events(world.engine)] == [("scanner", "link_burst")] * 2


async def test_a_burst_across_two_batches_relabels_the_stored_click(world: World) -> None:
    landing, faq = await link_ids(world)
    writer = EventWriter(world.engine)
    await writer([click(world, landing, LATER)])
    assert (await stored_events(world.engine))[0]["label"] == "human"
    result = await writer([click(world, faq, LATER + timedelta(seconds=1))])
    assert result.relabelled == 1
    assert [e["reason"] for e in await stored_events(world.engine)] == ["link_burst", "link_burst"]


async def test_people_clicking_slowly_or_twice_stay_human(world: World) -> None:
    landing, faq = await link_ids(world)
    writer = EventWriter(world.engine)
    await writer([click(world, landing, LATER), click(world, landing, LATER + timedelta(milliseconds=300))])
    await writer([click(world, faq, LATER + timedelta(seconds=20))])
    await writer([click(world, faq, LATER + timedelta(seconds=20, milliseconds=500), who="newyork2")])  # other delivery
    assert {e["label"] for e in await stored_events(world.engine)} == {"human"}


async def test_an_open_is_upgraded_when_a_human_click_follows(world: World) -> None:
    landing, _ = await link_ids(world)
    writer = EventWriter(world.engine)
    await writer(
        [
            open_(world, SENT_AT + timedelta(seconds=3), ua="Mozilla/5.0"),
            open_(world, SENT_AT + timedelta(seconds=3), who="newyork2"),
        ]
    )
    await writer([click(world, landing, LATER)])
    await writer([click(world, landing, LATER + timedelta(minutes=5))])  # a second human click changes nothing more
    got = [(e["kind"], e["delivery_id"], e["label"], e["reason"]) for e in await stored_events(world.engine)]
    ny, ny2 = world.delivery["newyork"], world.delivery["newyork2"]
    assert got == [
        ("open", ny, "human", "upgraded_by_click"),
        ("open", ny2, "machine_open", "soon_after_delivery"),
        ("click", ny, "human", "no_machine_signal"),
        ("click", ny, "human", "no_machine_signal"),
    ]


async def test_scanner_clicks_do_not_upgrade_opens(world: World) -> None:
    landing, _ = await link_ids(world)
    writer = EventWriter(world.engine)
    await writer([open_(world, SENT_AT + timedelta(seconds=1)), click(world, landing, LATER, method="HEAD")])
    assert [e["label"] for e in await stored_events(world.engine)] == ["machine_open", "scanner"]


async def test_hits_for_missing_deliveries_are_counted_not_stored(world: World) -> None:
    writer = EventWriter(world.engine)
    ghost = Hit("open", 987_654, LATER, "GET", FIREFOX, None, None)
    result = await writer([ghost, open_(world, LATER)])
    assert (result.written, result.unknown) == (1, 1)
    [event] = await stored_events(world.engine)
    assert event["campaign_id"] == world.campaign.id  # filled in from the ledger at flush
    assert await writer([]) == type(result)(0, 0, 0)


async def test_a_planned_delivery_has_no_hand_over_time(world: World) -> None:
    writer = EventWriter(world.engine)
    await writer([open_(world, SENT_AT, who="london")])  # never sent: the timing rule cannot apply
    assert (await stored_events(world.engine))[0]["reason"] == "no_machine_signal"


async def test_tuple_rows_read_back_as_the_core_insert_writes_them(world: World) -> None:
    """``insert_event_rows`` (driver-level rows of tuples: executemany on PostgreSQL, multi-row VALUES
    on SQLite) stores exactly what ``insert_events`` stores: same datetimes (to the microsecond, UTC),
    same values, on both databases."""
    from topslot.store import tracking_events as store

    landing, _ = await link_ids(world)
    at = LATER.replace(microsecond=123456)
    values = {
        "delivery_id": world.delivery["newyork"],
        "campaign_id": world.campaign.id,
        "kind": "click",
        "link_id": landing,
        "occurred_at": at,
        "method": "GET",
        "user_agent": FIREFOX,
        "referer": None,
        "ip": "198.51.100.7",
        "label": "human",
        "reason": "no_machine_signal",
    }
    async with world.engine.begin() as conn:
        await store.insert_events(conn, [values])
        await conn.run_sync(store.insert_event_rows, [tuple(values[k] for k in store.EVENT_FIELDS)])
    first, second = await stored_events(world.engine)
    assert {k: first[k] for k in store.EVENT_FIELDS} == {k: second[k] for k in store.EVENT_FIELDS} == values
    async with world.engine.connect() as conn:  # and compare as stored (string order on SQLite)
        recent = await conn.run_sync(store.recent_clicks, [values["delivery_id"]], at)
    assert len(recent) == 2


async def test_a_batch_larger_than_one_sqlite_statement_is_stored_whole_and_in_order(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite takes the rows in multi-row INSERTs of ``SQLITE_ROWS_PER_STATEMENT``: 7 rows by 3 are
    three statements (3, 3, 1), every row stored once, in the batch's order; PostgreSQL takes them in one."""
    from topslot.store import dialect

    monkeypatch.setattr(dialect, "SQLITE_ROWS_PER_STATEMENT", 3)
    hits = [open_(world, LATER + timedelta(seconds=i)) for i in range(7)]
    result = await EventWriter(world.engine)(hits)
    stored = await stored_events(world.engine)
    assert result.written == 7 and len(stored) == 7
    assert [e["occurred_at"] for e in stored] == [h.occurred_at for h in hits]


def numbered(hits: list[Hit], first: int) -> list[Hit]:
    for i, hit in enumerate(hits):
        hit.seq = first + i  # as an EventBuffer numbers them
    return hits


async def test_a_numbered_batch_written_again_is_stored_once(world: World) -> None:
    """The writer process committed a batch and died before answering: the server writes the batch
    again, with more hits behind it. What the first write stored is skipped, the rest stored."""
    landing, _ = await link_ids(world)
    writer = EventWriter(world.engine)
    first = numbered([open_(world, LATER), click(world, landing, LATER), open_(world, LATER, who="newyork2")], 1)
    result = await writer.write(first, "run-a")
    assert (result.written, result.repeated) == (3, 0)
    again = first + numbered([open_(world, LATER + timedelta(minutes=1))], 4)
    result = await writer.write(again, "run-a")
    assert (result.written, result.repeated, result.unknown) == (1, 3, 0)
    assert result.tally == (("open", "human", 1),)
    assert len(await stored_events(world.engine)) == 4
    result = await writer.write(again, "run-a")  # all of it stored already: nothing, and nothing moves back
    assert (result.written, result.repeated) == (0, 4)
    assert len(await stored_events(world.engine)) == 4


async def test_numbers_are_per_server_run_and_unnumbered_batches_are_stored_as_given(world: World) -> None:
    writer = EventWriter(world.engine)
    await writer.write(numbered([open_(world, LATER)], 1), "run-a")
    result = await writer.write(numbered([open_(world, LATER)], 1), "run-b")  # another server run's hit 1
    assert (result.written, result.repeated) == (1, 0)
    await writer([open_(world, LATER)])  # no source (an in-memory database's inline writer): no numbering
    assert len(await stored_events(world.engine)) == 3


async def test_a_delivery_known_to_have_a_human_open_is_not_asked_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Human opens are never relabelled, so once a committed batch has seen one, the delivery's next
    human clicks skip the question. A batch whose transaction fails teaches nothing."""
    landing, _ = await link_ids(world)
    asked: list[list[int]] = []
    real = store.with_open_labelled

    def recording(conn: Any, delivery_ids: Any, label: str) -> set[int]:
        asked.append(sorted(delivery_ids))
        return real(conn, delivery_ids, label)

    monkeypatch.setattr(store, "with_open_labelled", recording)
    ny = world.delivery["newyork"]
    writer = EventWriter(world.engine)
    await writer([open_(world, LATER), click(world, landing, LATER)])
    fail = RuntimeError("the commit fails")

    def failing(conn: Any, changes: Any) -> None:
        raise fail

    monkeypatch.setattr(store, "set_labels", failing)
    with pytest.raises(RuntimeError):
        await writer([open_(world, LATER, who="newyork2"), click(world, landing, LATER, who="newyork2")])
    monkeypatch.undo()
    monkeypatch.setattr(store, "with_open_labelled", recording)
    await writer([click(world, landing, LATER + timedelta(minutes=1)), click(world, landing, LATER, who="newyork2")])
    ny2 = world.delivery["newyork2"]
    assert asked == [[ny], [ny2], [ny2]]  # newyork asked once; newyork2's first answer was rolled back
    assert len(await stored_events(world.engine)) == 4


async def test_the_blocking_writer_keeps_one_connection_and_replaces_it_after_a_failure(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    if world.engine.dialect.name != "sqlite":
        pytest.skip("write_blocking is the SQLite file writer's (PostgreSQL is written through asyncpg)")
    landing, _ = await link_ids(world)
    blocking = sync_sqlite_engine(world.engine)
    checkouts: list[int] = []
    event.listen(blocking, "checkout", lambda dbapi, record, proxy: checkouts.append(id(dbapi)))
    writer = EventWriter(blocking)
    try:
        for minute in range(3):
            writer.write_blocking(numbered([open_(world, LATER + timedelta(minutes=minute))], minute + 1), "run-a")
        assert len(checkouts) == 1
        real = store.insert_event_rows
        monkeypatch.setattr(store, "insert_event_rows", lambda conn, rows: (_ for _ in ()).throw(OSError("disk")))
        with pytest.raises(OSError):
            writer.write_blocking(numbered([click(world, landing, LATER)], 4), "run-a")
        monkeypatch.setattr(store, "insert_event_rows", real)
        result = writer.write_blocking(numbered([click(world, landing, LATER)], 4), "run-a")
        assert (result.written, result.repeated) == (1, 0)  # the failed batch left nothing behind
        assert len(checkouts) == 2
    finally:
        writer.close()
        blocking.dispose()
    assert len(await stored_events(world.engine)) == 4
