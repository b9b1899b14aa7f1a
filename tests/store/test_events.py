"""Event import: unknown contacts reported per row, re-import is idempotent."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store.contacts import import_contacts
from topslot.store.events import import_events
from topslot.store.schema import purchases, searches

NOW = datetime(2027, 5, 6, 12, tzinfo=UTC)


async def test_events_import_reports_unknown_contacts_and_is_idempotent(engine: AsyncEngine, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text("external_id\nc1\nc2\n", encoding="utf-8")
    await import_contacts(engine, people, now=NOW)
    events = tmp_path / "events.csv"
    events.write_text(
        "type,contact,order_id,sku,category,amount,currency,time,term\n"
        "purchase,c1,o1,LIP-1,Cosmetics,12.50,USD,2027-05-01T10:00:00Z,\n"
        "purchase,c1,o1,LIP-2,cosmetics,7.25,USD,2027-05-01T10:00:00Z,\n"
        "purchase,ghost,o2,LIP-1,cosmetics,1,USD,2027-05-01T10:00:00Z,\n"
        "search,c2,,,,,,2027-05-02T08:00:00+08:00,Lipstick 50%\n"
        "purchase,c2,,LIP-1,cosmetics,abc,USD,2027-05-01,\n"
        "purchase,c2,o1,LIP-1,cosmetics,12.50,USD,2027-05-01T10:00:00Z,\n",  # duplicate of line 2
        encoding="utf-8",
    )
    report = await import_events(engine, events, batch_size=2)
    assert (report.imported, report.ignored, report.rejected) == (3, 1, 2)
    assert [str(p) for p in report.problems] == [
        f"{events}:4:1: contact 'ghost' is not known (import contacts first)",
        f"{events}:6:3: order_id is required",
        f"{events}:6:6: amount 'abc' is not a number",
    ]
    again = await import_events(engine, events)
    assert (again.imported, again.ignored, again.rejected) == (0, 4, 2)
    async with engine.connect() as conn:
        bought = (await conn.execute(select(purchases.c.sku, purchases.c.category, purchases.c.amount).order_by(purchases.c.sku))).all()
        searched = (await conn.execute(select(searches.c.term, searches.c.term_folded, searches.c.searched_at))).all()
    assert [tuple(b) for b in bought] == [("LIP-1", "cosmetics", Decimal("12.50")), ("LIP-2", "cosmetics", Decimal("7.25"))]
    assert [tuple(s) for s in searched] == [("Lipstick 50%", "lipstick 50%", datetime(2027, 5, 2, 0, 0, tzinfo=UTC))]


async def test_parallel_event_import(engine: AsyncEngine, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text("external_id\nc1\n", encoding="utf-8")
    await import_contacts(engine, people, now=NOW)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            f'{{"type": "search", "contact": "c1", "term": "t{i}", "time": "2027-05-0{1 + i % 5}T08:00:00Z"}}\n'
            for i in range(25)
        )
        + '{"type": "search", "contact": "c1"}\n',
        encoding="utf-8",
    )
    report = await import_events(engine, events, batch_size=10, parallel=True)
    assert (report.imported, report.rejected) == (25, 1)
    assert [str(p) for p in report.problems] == [f"{events}:26:1: term is required", f"{events}:26:1: time is required"]
