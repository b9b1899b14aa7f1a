"""The send transitions of ``topslot.store.dispatch``: marking a chunk ``sending``, recording its outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduling.ledger_fixtures import NOW, campaign, populate, rows, settings
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.delivery import Decision
from topslot.delivery import DeliveryState as S
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


async def test_a_chunk_of_outcomes_is_recorded_row_by_row(engine: AsyncEngine, tmp_path: Path) -> None:
    """A chunk's outcomes are one statement (``UPDATE … FROM unnest`` on PostgreSQL, ``… FROM (VALUES
    …)`` on SQLite): each row still gets its own values, a provider left out keeps the row's, and
    only rows in the prior state under this owner's lease change."""
    first, second = await claimed(engine, tmp_path)
    pairs = [(c.delivery_id, c.lease_epoch) for c in (first, second)]
    assert await dispatch.mark_sending(engine, pairs, "node-a", NOW) == {first.delivery_id, second.delivery_id}
    retry_at = NOW + timedelta(minutes=10)
    outcomes = [
        dispatch.Outcome(first.delivery_id, first.contact_id, Decision(S.SENT, provider_id="250 2.0.0 queued as A1"),
                         provider="smtp-backup", segments=None),
        dispatch.Outcome(second.delivery_id, second.contact_id,
                         Decision(S.RETRY_WAIT, next_attempt_utc=retry_at, error="451 4.3.0 try later")),
    ]  # fmt: skip

    async def chunk() -> dict[int, dict[str, Any]]:
        return {r["id"]: r for r in await rows(engine) if r["id"] in (first.delivery_id, second.delivery_id)}

    # another owner's chunk changes nothing
    await dispatch.record_outcomes(engine, campaign().id, outcomes, "node-b", NOW)
    assert {i: r["state"] for i, r in (await chunk()).items()} == {
        first.delivery_id: "sending",
        second.delivery_id: "sending",
    }
    later = NOW + timedelta(seconds=3)
    await dispatch.record_outcomes(engine, campaign().id, outcomes, "node-a", later)
    got = await chunk()
    sent, waiting = got[first.delivery_id], got[second.delivery_id]
    assert (sent["state"], sent["provider_id"], sent["provider"], sent["last_error"]) == (
        "sent",
        "250 2.0.0 queued as A1",
        "smtp-backup",
        None,
    )
    assert sent["next_attempt_utc"] is None and sent["updated_at"] == later
    assert (waiting["state"], waiting["provider_id"], waiting["last_error"]) == (
        "retry_wait",
        None,
        "451 4.3.0 try later",
    )
    assert waiting["next_attempt_utc"] == retry_at and waiting["provider"] is None
    # recorded once: the same chunk again finds no row in ``sending`` and changes nothing
    await dispatch.record_outcomes(engine, campaign().id, outcomes[::-1], "node-a", later + timedelta(seconds=1))
    assert {i: r["updated_at"] for i, r in (await chunk()).items()} == {
        first.delivery_id: later,
        second.delivery_id: later,
    }


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
