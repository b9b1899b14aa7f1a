"""Dispatch helper processes: a bucket claimed and sent by two processes, each recipient once."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from channels.scripted_smtp import ScriptedSmtpServer
from structlog.testing import capture_logs

from daemon.clock import FakeClock
from daemon.dispatch.service import DispatchService
from daemon.scheduling.scheduler import CLAIM_BATCH, BucketScheduler
from daemon.settings import Settings
from daemon.store.db import open_engine, upgrade
from dispatch.fixtures import DUE, NOW, campaign, import_people, ledger_by_email, settings


@asynccontextmanager
async def two_processes(
    tmp_path: Path, emails: list[str]
) -> AsyncIterator[tuple[ScriptedSmtpServer, DispatchService, Settings]]:
    """A SQLite ledger (helpers open settings.database_url) with ``emails`` planned in one bucket, a
    real SMTP server, and a dispatch service with one helper process started."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'topslot.db'}"
    engine = open_engine(url)
    await upgrade(engine)
    try:
        async with ScriptedSmtpServer() as server:
            await import_people(engine, tmp_path, emails)
            s = settings(tmp_path, server.port, database_url=url, dispatch_processes=2)
            service = DispatchService(engine, s, FakeClock(NOW), node="test-node")
            assert service.helpers is not None
            await service.helpers.start()
            try:
                yield server, service, s
            finally:
                await service.close()
    finally:
        await engine.dispose()


async def fire(service: DispatchService, s: Settings) -> int:
    """Plan the campaign and fire its bucket through a scheduler that shares it with the helpers."""
    c, clock = campaign(), service.clock
    scheduler = BucketScheduler(
        service.engine, s, clock, owner=service.owner, on_claimed=service.dispatch,
        on_fire=service.fire_helpers,
    )  # fmt: skip
    await service.on_campaigns_changed({c.id: c})
    await scheduler.on_campaigns_changed({c.id: c})
    clock.set(DUE - timedelta(minutes=1))  # type: ignore[attr-defined]
    return await scheduler.fire_bucket(c.id, "email", DUE)


async def test_a_bucket_is_shared_by_the_helper_and_each_recipient_gets_one_message(tmp_path: Path) -> None:
    n = CLAIM_BATCH * 2 + 500  # several claims, so that both processes get some
    emails = [f"accept+{i}@d{i % 7}.example" for i in range(n)]
    async with two_processes(tmp_path, emails) as (server, service, s):
        assert await fire(service, s) == n
        rows = await ledger_by_email(service.engine)
    assert Counter(r["state"] for r in rows.values()) == {"sent": n}
    owners = Counter(r["lease_owner"].split("/")[0] for r in rows.values())
    assert set(owners) == {"test-node", "test-node#w1"} and min(owners.values()) >= 100, owners
    assert Counter(rcpt for r in server.accepted() for rcpt in r.rcpt_to) == Counter(emails)  # everybody, once


async def test_a_dead_helper_is_logged_and_the_daemon_sends_the_bucket_alone(tmp_path: Path) -> None:
    emails = [f"accept+{i}@d{i % 3}.example" for i in range(300)]
    async with two_processes(tmp_path, emails) as (server, service, s):
        assert service.helpers is not None
        helper = service.helpers._processes[0]
        helper.kill()
        helper.join(10)
        with capture_logs() as logs:
            assert await fire(service, s) == len(emails)
        rows = await ledger_by_email(service.engine)
    assert [e["helper"] for e in logs if e["event"] == "dispatch_helper_failed"] == [1]
    assert Counter(r["state"] for r in rows.values()) == {"sent": len(emails)}
    assert Counter(rcpt for r in server.accepted() for rcpt in r.rcpt_to) == Counter(emails)
