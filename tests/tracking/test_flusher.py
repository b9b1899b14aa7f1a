"""The tracking writer's process: its death is seen at once, a stuck one is killed after its answer
timeout, a batch it did not write is written by the next one exactly once — and one it wrote but
did not answer is not written again —, a database refusal is answered and the batch kept, a
database it cannot open is a clear failure, old server runs' numbers are forgotten."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from topslot.store.db import open_engine
from topslot.store.schema import tracking_sources
from topslot.tracking.flusher import SOURCE_TTL, ProcessWriter, WriterFailed
from topslot.tracking.hits import Hit
from topslot.tracking.server import TrackingServer
from tracking.fixtures import World, make_world, process_alive, running_server, stored_events


@pytest.fixture
async def world(engine: AsyncEngine, tmp_path: Path) -> World:
    return await make_world(engine, tmp_path)


async def opens(world: World, url: str, n: int) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.get(f"{url}/o/{world.open_token()}.gif") as r:
                assert r.status == 200


async def until(condition: object, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_killed_writer_process_is_seen_at_once_and_replaced(world: World, engine: AsyncEngine) -> None:
    async with running_server(world, flush_interval=60) as server:
        await opens(world, server.url, 3)
        await server.buffer.flush()
        first = server.writer.pid
        assert first is not None
        with capture_logs() as logs:
            os.kill(first, signal.SIGKILL)
            await until(lambda: server.writer.pid is None)  # its sentinel, not a batch, told
        exited = [e for e in logs if e["event"] == "tracking_writer_exited"]
        assert exited and exited[0]["pid"] == first and exited[0]["exitcode"] == -signal.SIGKILL
        await opens(world, server.url, 4)
        await server.buffer.flush()
        assert server.writer.pid not in (None, first) and server.writer.started == 2
    assert len(await stored_events(engine)) == 7
    assert server.stats.written == 7 and server.stats.lost == 0 and server.stats.failed_flushes == 0


async def stopped_with_five_waiting(world: World, server: TrackingServer) -> int:
    """One hit stored (the process runs), five waiting in the buffer, the process stopped: its pid."""
    await opens(world, server.url, 1)
    await server.buffer.flush()
    pid = server.writer.pid
    assert pid is not None
    await opens(world, server.url, 5)
    os.kill(pid, signal.SIGSTOP)
    return pid


async def test_a_batch_in_flight_when_the_process_dies_is_written_again_once(world: World, engine: AsyncEngine) -> None:
    """The process is stopped (it cannot read the batch) and killed while the server waits for its
    answer: the batch fails, stays in the buffer and the next process writes it, once."""
    async with running_server(world, flush_interval=60) as server:
        pid = await stopped_with_five_waiting(world, server)
        with capture_logs() as logs:
            flushing = asyncio.create_task(server.buffer.flush())
            await until(lambda: len(server.buffer) == 0)  # handed over, waiting for the answer
            os.kill(pid, signal.SIGKILL)
            await flushing  # the failure keeps the batch queued
        assert len(server.buffer) == 5 and server.stats.failed_flushes == 1
        assert any(e["event"] == "tracking_flush_failed" and "ended" in e["error"] for e in logs)
        await server.buffer.flush()
        assert server.writer.started == 2 and not process_alive(pid)
    assert len(await stored_events(engine)) == 6
    assert server.stats.written == 6 and server.stats.lost == 0


async def test_a_stuck_process_is_killed_after_its_answer_timeout_and_the_batch_written_once(
    world: World, engine: AsyncEngine
) -> None:
    """The process is stopped and nobody kills it: the server stops waiting after ``answer_timeout``,
    kills it, keeps the batch, and the next process writes it once."""
    async with running_server(world, flush_interval=60) as server:
        server.writer.answer_timeout = 0.5
        pid = await stopped_with_five_waiting(world, server)
        with capture_logs() as logs:
            await server.buffer.flush()  # returns: the failure keeps the batch queued
        assert len(server.buffer) == 5 and server.stats.failed_flushes == 1
        stuck = [e for e in logs if e["event"] == "tracking_writer_stuck"]
        assert stuck and stuck[0]["pid"] == pid and stuck[0]["hits"] == 5 and stuck[0]["log_level"] == "error"
        assert any(e["event"] == "tracking_flush_failed" and "did not answer" in e["error"] for e in logs)
        await until(lambda: not process_alive(pid))  # killed, not left stopped beside the next one
        await server.buffer.flush()
        assert server.writer.started == 2 and server.writer.pid not in (None, pid)
    assert len(await stored_events(engine)) == 6
    assert server.stats.written == 6 and server.stats.lost == 0


async def test_a_batch_committed_by_a_process_that_died_before_answering_is_not_stored_again(
    world: World, engine: AsyncEngine
) -> None:
    """What the buffer does after a lost answer, done by hand: the same numbered hits sent again,
    to a new process. The server run's ``written_through`` (in the database) says they are stored."""
    writer = ProcessWriter(engine)
    try:
        at = datetime(2027, 5, 6, 8, 0, tzinfo=UTC)
        hits = [Hit("open", world.delivery["newyork"], at, "GET", None, None, "127.0.0.1", seq=n) for n in (1, 2)]
        assert (await writer(hits)).written == 2
        first = writer.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # as if killed after its commit, before its answer
        await until(lambda: writer.pid is None)
        later = Hit("open", world.delivery["newyork2"], at, "GET", None, None, "127.0.0.1", seq=3)
        result = await writer([*hits, later])
        assert (result.written, result.repeated) == (1, 2) and writer.started == 2
    finally:
        await writer.close()
    assert [e["delivery_id"] for e in await stored_events(engine)] == [
        world.delivery["newyork"],
        world.delivery["newyork"],
        world.delivery["newyork2"],
    ]


async def test_a_new_process_forgets_server_runs_silent_for_a_week(world: World, engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(tracking_sources),
            [
                {"source": "old", "written_through": 9, "updated_at": now - SOURCE_TTL - timedelta(hours=1)},
                {"source": "recent", "written_through": 9, "updated_at": now - SOURCE_TTL + timedelta(hours=1)},
            ],
        )
    writer = ProcessWriter(engine)
    try:
        await writer.ready()
    finally:
        await writer.close()
    async with engine.connect() as conn:
        left = (await conn.execute(select(tracking_sources.c.source))).scalars().all()
    assert left == ["recent"]


async def test_a_database_refusal_is_answered_and_the_batch_kept(world: World, engine: AsyncEngine) -> None:
    async with running_server(world, flush_interval=60) as server:
        await opens(world, server.url, 1)
        await server.buffer.flush()  # the process runs, its statements prepared
        pid = server.writer.pid
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE events RENAME TO events_away"))
        await opens(world, server.url, 4)
        with capture_logs() as logs:
            await server.buffer.flush()
        assert len(server.buffer) == 4 and server.stats.failed_flushes == 1
        failed = [e for e in logs if e["event"] == "tracking_flush_failed"]
        assert failed and "WriterFailed" in failed[0]["error"] and "events" in failed[0]["error"]
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE events_away RENAME TO events"))
        for _ in range(3):  # PostgreSQL: a statement prepared before the renames may fail once more
            await server.buffer.flush()
            if not len(server.buffer):
                break
        assert len(server.buffer) == 0 and server.writer.pid == pid  # the same process all along
    assert len(await stored_events(engine)) == 5 and server.stats.lost == 0


async def test_a_database_the_process_cannot_open_is_a_clear_failure(unused_tcp_port: int) -> None:
    engine = open_engine(f"postgresql+asyncpg://topslot@127.0.0.1:{unused_tcp_port}/nowhere")
    writer = ProcessWriter(engine)
    try:
        hit = Hit("open", 1, datetime(2027, 5, 6, 8, 0, tzinfo=UTC), "GET", None, None, "127.0.0.1")
        with pytest.raises(WriterFailed, match="could not open the database: .*(refused|connect)"):
            await writer([hit])
        assert writer.pid is None and writer.started == 0
    finally:
        await writer.close()
        await engine.dispose()
