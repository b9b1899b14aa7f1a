"""Heartbeats, the fence and dead-process recovery (``topslot.dispatch.heartbeat``,
``DispatchService.recover_dead``), on a real database (SQLite and PostgreSQL). Real node processes
killed and stopped: tests/dispatch/test_nodes.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from dispatch.fixtures import DUE, NOW, campaign, import_people, settings
from topslot import __version__
from topslot.clock import FakeClock, SystemClock
from topslot.dispatch.heartbeat import BEAT_SHARE, FENCE_SHARE, Heartbeat, Identity, NodeFenced
from topslot.dispatch.service import DispatchService
from topslot.scheduling.scheduler import BucketScheduler
from topslot.store import dispatch as store
from topslot.store import ledger, status
from topslot.store.schema import deliveries, processes

TIMEOUT = 3.0  # node_timeout_s: the smallest the settings allow


def identity(owner: str = "nodeA/1") -> Identity:
    return Identity(owner, owner.partition("/")[0], "daemon", 4242, __version__, SystemClock().now())


async def heartbeat_of(engine, owner: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(processes).where(processes.c.owner == owner))).one()


async def until(predicate, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_the_heartbeat_is_written_at_start_then_from_its_thread_and_stopped_gracefully(engine) -> None:
    beat = Heartbeat(engine, identity(), TIMEOUT)
    await beat.start()  # the first one before it returns
    first = await heartbeat_of(engine, "nodeA/1")
    assert (first.node, first.role, first.pid, first.stopped_at, first.dead_at) == ("nodeA", "daemon", 4242, None, None)
    await until(lambda: beat.beats >= 3)  # every TIMEOUT / 3 seconds
    assert (await heartbeat_of(engine, "nodeA/1")).last_heartbeat_utc > first.last_heartbeat_utc
    assert beat.fresh()
    await beat.stop()
    after = await heartbeat_of(engine, "nodeA/1")
    assert after.stopped_at is not None
    beats = beat.beats
    await asyncio.sleep(TIMEOUT * BEAT_SHARE * 1.5)
    assert beat.beats == beats  # stopped means stopped
    [proc] = (await status.read_status(engine, SystemClock().now(), dead_after=timedelta(seconds=TIMEOUT))).processes
    assert proc.health == "stopped"


async def test_a_process_whose_heartbeat_is_late_fences_itself_until_one_is_written(engine) -> None:
    beat = Heartbeat(engine, identity(), TIMEOUT)
    await beat.start()
    try:
        await beat.unfenced()  # fresh: returns at once
        with capture_logs() as logs:
            beat._last_ok -= TIMEOUT * FENCE_SHARE  # as after a stop (SIGSTOP) or a cut to the database
            assert not beat.fresh() and not beat.settled()
            # waits for the next heartbeat written (the bound only ends a hung test: not a timing claim)
            await asyncio.wait_for(beat.unfenced(), TIMEOUT * 5)
        assert [e["event"] for e in logs if e["event"].startswith("node_")] == ["node_fenced", "node_unfenced"]
        assert not beat.settled()  # fresh again, but not for a whole timeout yet: it judges nobody
    finally:
        await beat.stop()


async def test_only_one_caller_finds_a_process_dead_and_its_heartbeat_is_refused_from_then_on(engine) -> None:
    now = SystemClock().now()
    for owner, age, stopped in (("a/1", 60, False), ("b/1", 1, False), ("c/1", 60, True)):
        await status.heartbeat(engine, owner=owner, node=owner[0], role="daemon", pid=1, version="1",
                               started_at=now, now=now - timedelta(seconds=age))  # fmt: skip
        if stopped:
            await status.stopped(engine, owner, now - timedelta(seconds=age))
    found = await status.declare_dead(engine, now, timeout=timedelta(seconds=10))
    assert [(p.owner, p.health) for p in found] == [("a/1", "dead")]  # not the live one, not the one stopped
    assert await status.declare_dead(engine, now, timeout=timedelta(seconds=10)) == []  # found once
    assert await status.dead_owners(engine, now, window=timedelta(minutes=15)) == {"a/1"}
    assert await status.dead_owners(engine, now + timedelta(minutes=16), window=timedelta(minutes=15)) == set()
    alive = await status.heartbeat(engine, owner="a/1", node="a", role="daemon", pid=1, version="1",
                                   started_at=now, now=now)  # fmt: skip
    assert alive is False  # it woke up: it may not come back as if nothing happened
    assert (await heartbeat_of(engine, "a/1")).last_heartbeat_utc < now
    found = await status.read_status(engine, now, dead_after=timedelta(seconds=TIMEOUT))
    health = {p.owner: p.health for p in found.processes}
    assert health == {"a/1": "dead", "b/1": "running", "c/1": "stopped"}


async def test_a_process_found_dead_is_fenced_for_good_and_told(engine) -> None:
    told = asyncio.Event()
    beat = Heartbeat(engine, identity(), TIMEOUT, on_declared_dead=told.set)
    await beat.start()
    try:
        later = SystemClock().now() + timedelta(seconds=TIMEOUT * 2)  # another node's view, a while on
        with capture_logs() as logs:
            assert [p.owner for p in await status.declare_dead(engine, later, timeout=timedelta(seconds=TIMEOUT))] == [
                "nodeA/1"
            ]
            await asyncio.wait_for(told.wait(), TIMEOUT * BEAT_SHARE + 5)  # its next heartbeat is refused
            assert beat.declared_dead and not beat.fresh()
        assert [e["event"] for e in logs if e["event"].startswith("node_")] == ["node_declared_dead", "node_fenced"]
        with pytest.raises(NodeFenced) as raised:
            await beat.unfenced()
        assert raised.value.code == "fenced"
    finally:
        await beat.stop()


async def planned_bucket(engine, tmp_path: Path, people: int):
    await import_people(engine, tmp_path, [f"accept+{i}@example.com" for i in range(people)])
    c = campaign()
    await BucketScheduler(engine, settings(tmp_path, None), FakeClock(NOW)).on_campaigns_changed({c.id: c})
    return c


async def test_the_rows_of_a_dead_process_are_taken_back_within_seconds_not_at_the_lease(engine, tmp_path) -> None:
    c = await planned_bucket(engine, tmp_path, 6)
    s = settings(tmp_path, None, node_timeout_s=TIMEOUT)
    elsewhere = settings(tmp_path, None, node_timeout_s=TIMEOUT, var_dir=tmp_path / "nodeA")  # another machine
    dead = DispatchService(engine, elsewhere, FakeClock(NOW), node="nodeA", messengers=_NoMessengers())
    refired = asyncio.Event()

    async def on_recovered() -> None:
        refired.set()

    live = DispatchService(
        engine, s, FakeClock(NOW), node="nodeB", messengers=_NoMessengers(), on_recovered=on_recovered
    )
    await dead.start_heartbeat()
    await live.start_heartbeat()
    try:
        claims = await ledger.claim_bucket(engine, c.id, "email", DUE, owner=dead.owner, lease=dead.lease, now=NOW)
        assert len(claims) == 6 and dead.lease == timedelta(seconds=900)
        sending = await store.mark_sending(
            engine, [(x.delivery_id, x.lease_epoch) for x in claims[:2]], dead.owner, NOW
        )
        assert len(sending) == 2
        assert await live.recover_dead() == {}  # nobody is dead yet; and nodeB's heartbeat is not settled
        await dead.heartbeat.stop(graceful=False)  # as a SIGKILL: no more heartbeats, no goodbye
        with capture_logs() as logs:
            await until(lambda: live.heartbeat.settled())
            counts: dict[str, int] = {}
            async with asyncio.timeout(TIMEOUT * 3):
                while not counts:  # the heartbeat goes stale TIMEOUT seconds after the last one
                    counts = await live.recover_dead()
                    await asyncio.sleep(0.1)
        assert counts == {"claimed_to_planned": 4, "sending_to_unknown": 2}
        [found] = [e for e in logs if e["event"] == "node_dead"]
        assert (found["owner"], found["node"], found["role"]) == (dead.owner, "nodeA", "daemon")
        assert found["silent_s"] >= TIMEOUT
        assert refired.is_set()  # its buckets fire again at once on the live node
        async with engine.connect() as conn:
            states = dict((await conn.execute(select(deliveries.c.id, deliveries.c.state))).all())
        assert sorted(states.values()) == ["planned"] * 4 + ["unknown"] * 2
        # the dead process's late writes are refused: its claims and its outcomes are no longer its own
        assert (
            await store.mark_sending(engine, [(x.delivery_id, x.lease_epoch) for x in claims[2:]], dead.owner, NOW)
            == set()
        )
        assert await live.recover_dead() == {"claimed_to_planned": 0, "sending_to_unknown": 0}  # logged once
        assert [e for e in logs if e["event"] == "node_dead"] == [found]
    finally:
        await live.close()
        await dead.close()


async def test_nobody_is_judged_dead_by_a_process_whose_own_heartbeat_is_not_settled(engine, tmp_path) -> None:
    s = settings(tmp_path, None, node_timeout_s=TIMEOUT)
    live = DispatchService(engine, s, FakeClock(NOW), node="nodeB", messengers=_NoMessengers())
    await live.start_heartbeat()
    try:
        past = SystemClock().now() - timedelta(minutes=1)
        await status.heartbeat(engine, owner="nodeA/1", node="nodeA", role="daemon", pid=1, version="1",
                               started_at=past, now=past)  # fmt: skip
        live.heartbeat._last_ok -= TIMEOUT  # its own heartbeat was late too: a database outage, say
        await asyncio.sleep(TIMEOUT * BEAT_SHARE + 0.5)  # written again meanwhile: fresh, not settled
        assert live.heartbeat.fresh() and not live.heartbeat.settled()
        assert await live.recover_dead() == {}
        async with engine.connect() as conn:
            assert (
                await conn.execute(select(processes.c.dead_at).where(processes.c.owner == "nodeA/1"))
            ).scalar() is None
    finally:
        await live.close()


async def test_a_helper_found_dead_by_its_own_daemon_is_settled_by_its_journal(engine, tmp_path) -> None:
    """Same node, same disk: the journal of the dead process proves which ``sending`` rows never left."""
    c = await planned_bucket(engine, tmp_path, 3)
    s = settings(tmp_path, None, node_timeout_s=TIMEOUT)
    live = DispatchService(engine, s, FakeClock(NOW), node="nodeA", messengers=_NoMessengers())
    helper = DispatchService(engine, s, FakeClock(NOW), node="nodeA#w1", messengers=_NoMessengers(), helper=True)
    await live.start_heartbeat()
    await helper.start_heartbeat()
    try:
        claims = await ledger.claim_bucket(engine, c.id, "email", DUE, owner=helper.owner, lease=helper.lease, now=NOW)
        rows = [(x.delivery_id, x.lease_epoch) for x in claims]
        assert len(await store.mark_sending(engine, rows, helper.owner, NOW)) == 3
        assert helper.journal is not None
        await helper.journal.mark(claims[0].delivery_id)  # only the first was handed over
        await helper.heartbeat.stop(graceful=False)
        await until(lambda: live.heartbeat.settled())
        async with asyncio.timeout(TIMEOUT * 3):
            while not (counts := await live.recover_dead()):
                await asyncio.sleep(0.1)
        assert counts == {"claimed_to_planned": 0, "sending_to_unknown": 1, "sending_to_planned": 2}
    finally:
        await live.close()
        await helper.close()


class _NoMessengers:
    """These tests send nothing: the services only beat, claim and recover."""

    async def close(self) -> None:
        pass


async def test_a_node_found_dead_settles_its_unknown_rows_by_its_journal_when_it_starts_again(engine, tmp_path) -> None:
    """Another node can only make a dead node's ``sending`` rows ``unknown`` (the journal is on the
    dead node's disk); the dead node, started again, proves which of them never left."""
    c = await planned_bucket(engine, tmp_path, 3)
    s = settings(tmp_path, None, node_timeout_s=TIMEOUT)
    own_disk = settings(tmp_path, None, node_timeout_s=TIMEOUT, var_dir=tmp_path / "nodeA")
    dead = DispatchService(engine, own_disk, FakeClock(NOW), node="nodeA", messengers=_NoMessengers())
    live = DispatchService(engine, s, FakeClock(NOW), node="nodeB", messengers=_NoMessengers())
    await dead.start_heartbeat()
    await live.start_heartbeat()
    try:
        claims = await ledger.claim_bucket(engine, c.id, "email", DUE, owner=dead.owner, lease=dead.lease, now=NOW)
        assert (
            len(await store.mark_sending(engine, [(x.delivery_id, x.lease_epoch) for x in claims], dead.owner, NOW))
            == 3
        )
        assert dead.journal is not None
        await dead.journal.mark(claims[0].delivery_id)  # handed over: really on the wire
        await dead.journal.mark(claims[1].delivery_id)
        dead.journal.accepted(claims[1].delivery_id, "Q-provider-1", "smtp:local", None)  # and taken by the provider
        await dead.heartbeat.stop(graceful=False)
        await until(lambda: live.heartbeat.settled())
        async with asyncio.timeout(TIMEOUT * 3):
            while not (counts := await live.recover_dead()):
                await asyncio.sleep(0.1)
        assert counts == {"claimed_to_planned": 0, "sending_to_unknown": 3}  # nodeA's journal is not on nodeB's disk
        restarted = DispatchService(engine, own_disk, FakeClock(NOW), node="nodeA", messengers=_NoMessengers())
        try:
            recovered = await restarted.recover()
            again = await restarted.recover()
        finally:
            await restarted.close()
        assert recovered["unknown_to_planned"] == 1 and recovered["unknown_to_sent"] == 1
        async with engine.connect() as conn:
            found = dict((await conn.execute(select(deliveries.c.id, deliveries.c.state))).all())
        assert [found[x.delivery_id] for x in claims] == ["unknown", "sent", "planned"]
        assert not any(again.values())  # settled once: nothing left to look at
    finally:
        await live.close()
        await dead.close()
