"""Campaign versions in the database (``topslot.store.versions``), on SQLite and PostgreSQL: the
version in force is replaced only by one that wins, whatever the order the nodes record in; what
each process holds, and who holds another version, for ``topslot status``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from scheduling.ledger_fixtures import NOW, campaign
from sqlalchemy import select

from topslot.campaign_version import CampaignVersion
from topslot.store import status, versions
from topslot.store.schema import campaign_versions

OLD = CampaignVersion("a" * 64, NOW - timedelta(hours=1))
NEW = CampaignVersion("b" * 64, NOW)
OTHER = CampaignVersion("c" * 64, NOW)


async def test_the_first_version_is_recorded_and_a_newer_one_replaces_it(engine) -> None:
    c = campaign()
    first = await versions.record(engine, c, OLD, NOW, by="node-a/1")
    assert (first.before, first.after) == (None, versions.InForce(OLD, "node-a/1")) and not first.replaced
    newer = await versions.record(engine, c, NEW, NOW, by="node-b/2")
    assert newer.replaced and newer.after == versions.InForce(NEW, "node-b/2")
    assert await versions.in_force(engine, [c.id, "nope"]) == {c.id: versions.InForce(NEW, "node-b/2")}


async def test_an_older_version_changes_nothing_and_the_same_keeps_who_recorded_it(engine) -> None:
    c = campaign()
    await versions.record(engine, c, NEW, NOW, by="node-b/2")
    older = await versions.record(engine, c, OLD, NOW + timedelta(minutes=1), by="node-a/1")
    assert older.after == versions.InForce(NEW, "node-b/2") and not older.replaced
    same = CampaignVersion(NEW.digest, NOW + timedelta(days=1))  # copied later: another mtime, same content
    again = await versions.record(engine, c, same, NOW + timedelta(minutes=2), by="node-c/3")
    assert again.after == versions.InForce(NEW, "node-b/2")


async def test_at_the_same_mtime_the_higher_hash_is_in_force_whichever_came_first(engine) -> None:
    c = campaign()
    await versions.record(engine, c, OTHER, NOW, by="node-c/3")  # "c…" > "b…"
    assert (await versions.record(engine, c, NEW, NOW, by="node-b/2")).after.version == OTHER


async def test_nodes_recording_at_once_end_with_the_winner(engine) -> None:
    c = campaign()
    contenders = [CampaignVersion(f"{i:x}" * 64, NOW + timedelta(seconds=i % 4)) for i in range(1, 9)]
    await asyncio.gather(*(versions.record(engine, c, v, NOW, by=f"node-{i}/x") for i, v in enumerate(contenders)))
    winner = max(contenders, key=lambda v: (v.mtime, v.digest))
    assert (await versions.in_force(engine, [c.id]))[c.id].version == winner


async def test_status_shows_the_version_in_force_and_running_processes_holding_another(engine) -> None:
    c = campaign()
    await versions.record(engine, c, NEW, NOW, by="node-b/2")
    for owner, node in (("node-a/1", "node-a"), ("node-b/2", "node-b"), ("node-c/3", "node-c"), ("node-d/4", "node-d")):
        await status.heartbeat(engine, owner=owner, node=node, role="daemon", pid=1, version="0.1.0", started_at=NOW,
                               now=NOW)  # fmt: skip
    await status.heartbeat(engine, owner="node-c/3", node="node-c", role="daemon", pid=1, version="0.1.0",
                           started_at=NOW, now=NOW - timedelta(minutes=5))  # fmt: skip
    await versions.hold(engine, "node-a/1", {c.id: OLD}, NOW)  # holds back
    await versions.hold(engine, "node-b/2", {c.id: NEW}, NOW)  # in force
    await versions.hold(engine, "node-c/3", {c.id: OLD}, NOW)  # silent for 5 min: dead, not shown
    await versions.hold(engine, "node-d/4", {c.id: OLD}, NOW)
    await status.stopped(engine, "node-d/4", NOW)  # stopped: not shown

    [row] = (await status.read_status(engine, NOW, dead_after=timedelta(seconds=30))).campaigns
    assert (row.version, row.version_mtime, row.version_by) == (NEW.digest, NEW.mtime, "node-b/2")
    assert [(h.owner, h.node, h.version, h.mtime) for h in row.other_versions] == [
        ("node-a/1", "node-a", OLD.digest, OLD.mtime)
    ]

    await versions.hold(engine, "node-a/1", {c.id: NEW}, NOW)  # its files were updated
    assert (await status.campaign_rows(engine, NOW, dead_after=timedelta(seconds=30)))[0].other_versions == []
    await versions.hold(engine, "node-a/1", {}, NOW)  # unloaded: nothing held, and a stopped process's rows go
    assert await versions.holders(engine, NOW, timedelta(hours=1)) == [
        versions.Holder(c.id, "node-c/3", "node-c", OLD.digest, OLD.mtime)
    ]
    async with engine.connect() as conn:
        owners = set((await conn.execute(select(campaign_versions.c.owner))).scalars())
    assert owners == {"node-b/2", "node-c/3"}
