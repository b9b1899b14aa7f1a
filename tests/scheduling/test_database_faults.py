"""A database that refuses work for a few seconds mid-bucket costs those seconds, not the lease
(issue 12, item 2): the bucket step is tried again with a short backoff, the rows it held are
released before each try, health is ``degraded`` meanwhile, and the bucket finishes once the
database is back — every recipient once, nothing left claimed or sending.

The faults are real: SQLite's own "database or disk is full" (``PRAGMA max_page_count`` pinned at
the file's current size on every connection: growing the file fails, as on a full disk), and
PostgreSQL connections terminated by the server (``pg_terminate_backend``, what a server restart
or a dropped connection does to the sessions in flight), while a real SMTP server takes the mail.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from channels.scripted_smtp import ScriptedSmtpServer
from database_support import truncate_all
from dispatch.fixtures import DUE, ledger_by_email
from sqlalchemy import text
from structlog.testing import capture_logs

from scheduling.fault_support import (
    PEOPLE,
    SqliteDiskFull,
    assert_sent_once_each,
    bucket_service,
    events,
    run_with_fault,
)
from topslot.store.db import open_engine, upgrade

VICTIM = "topslot-fault-victim"  # application_name of the daemon's PostgreSQL sessions


async def test_sqlite_disk_full_mid_bucket_costs_seconds_not_the_lease(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'topslot.db'}")
    await upgrade(engine)
    disk = SqliteDiskFull(engine)
    try:
        async with ScriptedSmtpServer(accept_delay=0.02) as server, bucket_service(engine, tmp_path, server) as (
            scheduler,
            health,
        ):
            seen: list[str] = []

            async def fill() -> None:
                await disk.fill(engine)

            async def free() -> None:
                seen.append(health.status)  # degraded while the disk was full
                disk.free()

            logs, _ = await run_with_fault(scheduler, server, fill, free, 3.0)
            rows = await ledger_by_email(engine)
            final = health.status
    finally:
        await engine.dispose()
    states = assert_sent_once_each(rows, server)
    assert states["sent"] == PEOPLE - states.get("unknown", 0)
    assert seen == ["degraded"] and final == "ok"
    degraded = events(logs, "database_degraded")  # a step already failed may surface after the free, again
    assert degraded and all("database or disk is full" in e["error"] for e in degraded)
    # The full disk fails whichever write comes next: a claim step (retried by the scheduler) or, when the
    # bucket was all claimed before the fault (a loaded machine sends slowly), recording outcomes.
    assert {e["where"] for e in degraded} <= {"bucket", "record outcomes"}
    assert events(logs, "bucket_step_failed") or any(e["where"] == "record outcomes" for e in degraded)
    assert events(logs, "database_recovered") and not events(logs, "bucket_abandoned")
    # how many seconds it cost: bench/fault_costs.py (a test never times)


@pytest.mark.postgres
async def test_postgresql_connections_dropped_mid_bucket_cost_seconds_not_the_lease(
    tmp_path: Path, pg_migrated_schema: tuple[str, str]
) -> None:
    url, schema = pg_migrated_schema
    engine = open_engine(url, schema=schema, connect_args={"server_settings": {"application_name": VICTIM}})
    admin = open_engine(url)
    await truncate_all(engine)
    dropping = asyncio.Event()

    async def keep_dropping() -> None:  # what a restarting server does to every session, again and again
        while dropping.is_set():
            async with admin.connect() as conn:
                await conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
                    {"name": VICTIM},
                )
                await conn.commit()
            await asyncio.sleep(0.1)

    killer: list[asyncio.Task[None]] = []

    async def start() -> None:
        dropping.set()
        killer.append(asyncio.create_task(keep_dropping()))

    async def stop() -> None:
        dropping.clear()
        await killer[0]

    try:
        async with ScriptedSmtpServer(accept_delay=0.02) as server, bucket_service(engine, tmp_path, server) as (
            scheduler,
            health,
        ):
            logs, _ = await run_with_fault(scheduler, server, start, stop, 3.0)
            rows = await ledger_by_email(engine)
            final = health.status
    finally:
        await engine.dispose()
        await admin.dispose()
    assert_sent_once_each(rows, server)
    assert final == "ok"
    assert events(logs, "database_degraded") and events(logs, "database_recovered")
    assert not events(logs, "bucket_abandoned")


async def test_a_bucket_given_up_at_the_end_of_its_grace_releases_its_rows_at_once(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'topslot.db'}")
    await upgrade(engine)
    disk = SqliteDiskFull(engine)
    try:
        async with ScriptedSmtpServer() as server, bucket_service(engine, tmp_path, server) as (scheduler, health):
            await disk.fill(engine)  # full from the start, and it stays full
            with capture_logs() as logs:
                firing = asyncio.create_task(scheduler.fire_bucket("dispatch-test", "email", DUE))
                while not events(logs, "bucket_step_failed"):
                    await asyncio.sleep(0.01)
                scheduler.clock.set(DUE + timedelta(minutes=16))  # type: ignore[attr-defined]  # grace: 15 min
                await asyncio.wait_for(firing, 60)
            rows = await ledger_by_email(engine)
            status = health.status
    finally:
        await engine.dispose()
    [abandoned] = events(logs, "bucket_abandoned")
    assert abandoned["why"] == "the slot's grace is over" and "database or disk is full" in abandoned["error"]
    states = Counter(r["state"] for r in rows.values())
    assert not {"claimed", "sending"} & set(states), states  # released now, not by a lease 15 minutes on
    assert all(r["lease_owner"] is None for r in rows.values() if r["state"] == "planned")
    assert status == "degraded"  # the disk is still full
