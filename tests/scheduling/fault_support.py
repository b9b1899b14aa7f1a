"""A bucket fired through the real scheduler and dispatcher to a real SMTP server, with a fault
switched on and off in the middle of it: what the fault tests of tests/scheduling share."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

from channels.scripted_smtp import ScriptedSmtpServer
from dispatch.fixtures import DUE, NOW, campaign, import_people, settings
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from topslot.clock import FakeClock
from topslot.dispatch import dispatcher
from topslot.dispatch.service import DispatchService
from topslot.health import Health
from topslot.scheduling.scheduler import BucketScheduler

PEOPLE = 600
# Chunks of a sixth of the bucket: several transactions (a chunk's mark and record) fall in the
# fault's few seconds, so the fault meets one of them whatever the dispatcher's own chunk size.
FAULT_CHUNK = PEOPLE // 6


class SqliteDiskFull:
    """Makes every connection of ``engine`` refuse to grow the database file while ``on``."""

    def __init__(self, engine: AsyncEngine):
        self.on = False
        self.limit = 0
        event.listen(engine.sync_engine, "checkout", self._checkout)

    def _checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cursor = dbapi_connection.cursor()
        if self.on:
            cursor.execute(f"PRAGMA max_page_count={self.limit:d}")
        else:
            cursor.execute("PRAGMA max_page_count=1073741823")  # SQLite's default
        cursor.close()

    async def fill(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            self.limit = int((await conn.exec_driver_sql("PRAGMA page_count")).scalar_one())
        self.on = True

    def free(self) -> None:
        self.on = False


@asynccontextmanager
async def bucket_service(
    engine: AsyncEngine, tmp_path: Path, server: ScriptedSmtpServer
) -> AsyncIterator[tuple[BucketScheduler, Health]]:
    emails = [f"accept+{i}@d{i % 7}.example" for i in range(PEOPLE)]
    await import_people(engine, tmp_path, emails)
    s = settings(tmp_path, server.port)
    clock = FakeClock(NOW)
    health = Health()
    service = DispatchService(engine, s, clock, node="faults", health=health)
    scheduler = BucketScheduler(
        engine, s, clock, owner=service.owner, on_claimed=service.dispatch, on_finished=service.finish_bucket,
        health=health,
    )  # fmt: skip
    c = campaign()
    await service.on_campaigns_changed({c.id: c})
    await scheduler.on_campaigns_changed({c.id: c})
    clock.set(DUE - timedelta(minutes=1))
    try:
        with patch.object(dispatcher, "CHUNK", FAULT_CHUNK):
            yield scheduler, health
    finally:
        await service.close()


async def run_with_fault(
    scheduler: BucketScheduler,
    server: ScriptedSmtpServer,
    start_fault: Callable[[], Any],
    end_fault: Callable[[], Any],
    seconds: float,
) -> tuple[list[dict[str, Any]], float]:
    """Fire the bucket; once the server has taken a sixth of it, the fault for ``seconds``; the logs
    and how long the bucket took after the fault ended."""
    with capture_logs() as logs:
        firing = asyncio.create_task(scheduler.fire_bucket("dispatch-test", "email", DUE))
        while len(server.accepted()) < PEOPLE // 6:
            assert not firing.done(), "the bucket ended before the fault"
            await asyncio.sleep(0.01)
        await start_fault()
        await asyncio.sleep(seconds)
        await end_fault()
        ended = time.monotonic()
        await asyncio.wait_for(firing, 120)
        after = time.monotonic() - ended
    return logs, after


def assert_sent_once_each(rows: dict[str, dict[str, Any]], server: ScriptedSmtpServer) -> Counter[str]:
    states = Counter(r["state"] for r in rows.values())
    assert set(states) <= {"sent", "unknown"}, states  # nothing left planned, claimed or sending
    received = Counter(rcpt for r in server.accepted() for rcpt in r.rcpt_to)
    assert max(received.values()) == 1  # nobody twice
    assert {e for e, r in rows.items() if r["state"] == "sent"} <= set(received)
    return states


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]
