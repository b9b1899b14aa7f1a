"""The send transitions of ``topslot.store.dispatch``: marking a chunk ``sending``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduling.ledger_fixtures import NOW, campaign, populate, rows, settings
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.scheduling.plan_run import plan_campaign
from topslot.store import dispatch, ledger
from topslot.store.db import open_engine, upgrade
from topslot.store.ledger import Claimed

NY_DUE = datetime(2027, 5, 6, 11, 30, tzinfo=UTC)  # the example's New York contacts' bucket (test_ledger)


async def claimed(engine: AsyncEngine, tmp_path: Path, owner: str = "node-a") -> list[Claimed]:
    c = campaign()
    await populate(engine, tmp_path)
    await ledger.record_campaign(engine, c, "hash", NOW)
    await plan_campaign(engine, c, settings(tmp_path), NOW, write=True)
    got = await ledger.claim_bucket(engine, c.id, "email", NY_DUE, owner=owner, lease=timedelta(minutes=5), now=NOW)
    assert len(got) == 2
    return got


async def test_mark_sending_takes_only_this_claim_of_this_owner(engine: AsyncEngine, tmp_path: Path) -> None:
    first, second = await claimed(engine, tmp_path)
    # another owner, or an earlier claim of the row (its epoch), marks nothing
    assert await dispatch.mark_sending(engine, [(first.delivery_id, first.lease_epoch)], "node-b", NOW) == set()
    stale = [(first.delivery_id, first.lease_epoch + 1), (second.delivery_id, second.lease_epoch)]
    assert await dispatch.mark_sending(engine, stale, "node-a", NOW) == {second.delivery_id}
    # a lease that has run out marks nothing either
    late = NOW + timedelta(minutes=6)
    assert await dispatch.mark_sending(engine, [(first.delivery_id, first.lease_epoch)], "node-a", late) == set()
    states = {r["id"]: (r["state"], r["attempts"]) for r in await rows(engine)}
    assert states[second.delivery_id] == ("sending", 1)
    assert states[first.delivery_id] == ("claimed", 0)


async def test_sqlite_finds_the_chunk_by_primary_key(tmp_path: Path) -> None:
    """A row-value IN list (id, epoch) is searched by no index on SQLite: the chunk's rows are found
    by their ids (the primary key), not by reading every claimed row of the ledger for each chunk.
    The plan of the very statement ``mark_sending`` runs, with its parameters."""
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
    ran: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.startswith("UPDATE deliveries"):
            ran.append((statement, parameters))

    try:
        await upgrade(engine)
        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        assert await dispatch.mark_sending(engine, [(i, 1) for i in range(1, 201)], "node-a", NOW) == set()
        ((statement, parameters),) = ran
        async with engine.connect() as conn:
            explained = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = [row[-1] for row in explained]
    finally:
        await engine.dispose()
    searched = [step for step in plan if step.startswith(("SEARCH deliveries", "SCAN deliveries"))]
    assert len(searched) == 1, plan
    assert "rowid=?" in searched[0] or "PRIMARY KEY" in searched[0], plan
