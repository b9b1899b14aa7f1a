"""Dispatch helper processes: a bucket claimed and sent by two processes, each recipient once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from channels.scripted_smtp import ScriptedSmtpServer
from structlog.testing import capture_logs

from dispatch.fixtures import DUE, NOW, campaign, import_people, ledger_by_email, settings
from topslot import metrics
from topslot.clock import FakeClock
from topslot.dispatch.claims import CLAIM_BATCH
from topslot.dispatch.service import DispatchService
from topslot.scheduling.scheduler import BucketScheduler
from topslot.settings import Settings
from topslot.store.db import open_engine, upgrade


@asynccontextmanager
async def two_processes(
    tmp_path: Path, emails: list[str], accept_delay: float = 0.0
) -> AsyncIterator[tuple[ScriptedSmtpServer, DispatchService, Settings]]:
    """A SQLite ledger (helpers open settings.database_url) with ``emails`` planned in one bucket, a
    real SMTP server, and a dispatch service with one helper process started."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'topslot.db'}"
    engine = open_engine(url)
    await upgrade(engine)
    try:
        async with ScriptedSmtpServer(accept_delay=accept_delay) as server:
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
    sent = {"channel": "email", "provider": "smtp", "state": "sent"}
    counted = metrics.REGISTRY.get_sample_value("topslot_deliveries_total", sent) or 0.0
    answered = metrics.REGISTRY.get_sample_value("topslot_send_latency_seconds_count", {"provider": "smtp"}) or 0.0
    async with two_processes(tmp_path, emails) as (server, service, s):
        assert await fire(service, s) == n
        rows = await ledger_by_email(service.engine)
    assert Counter(r["state"] for r in rows.values()) == {"sent": n}
    # this process's metrics count the helper's sends too (from the tallies it sends back)
    assert metrics.REGISTRY.get_sample_value("topslot_deliveries_total", sent) == counted + n
    # and their send latencies, which each helper sends back with its reply: every send, once
    assert metrics.REGISTRY.get_sample_value("topslot_send_latency_seconds_count", {"provider": "smtp"}) == answered + n
    owners = Counter(r["lease_owner"].split("/")[0] for r in rows.values())
    assert set(owners) == {"test-node", "test-node#w1"} and min(owners.values()) >= 100, owners
    assert Counter(rcpt for r in server.accepted() for rcpt in r.rcpt_to) == Counter(emails)  # everybody, once


async def test_a_helper_dead_before_the_bucket_is_restarted_and_the_daemon_sends_the_bucket(tmp_path: Path) -> None:
    emails = [f"accept+{i}@d{i % 3}.example" for i in range(300)]
    async with two_processes(tmp_path, emails) as (server, service, s):
        assert service.helpers is not None
        [helper] = service.helpers._processes
        with capture_logs() as logs:
            helper.kill()
            assert await fire(service, s) == len(emails)
            rows = await ledger_by_email(service.engine)
            assert await until(lambda: any(e["event"] == "dispatch_helper_restarted" for e in logs))
        [restarted] = service.helpers._processes
    died = [e for e in logs if e["event"] == "dispatch_helper_died"]
    assert len(died) == 1 and died[0]["helper"] == 1 and died[0]["exitcode"] == -signal.SIGKILL
    assert restarted.pid != helper.pid
    assert Counter(r["state"] for r in rows.values()) == {"sent": len(emails)}
    assert Counter(rcpt for r in server.accepted() for rcpt in r.rcpt_to) == Counter(emails)


async def test_a_helper_killed_mid_bucket_gives_its_rows_back_at_once_and_the_bucket_still_goes_out(
    tmp_path: Path,
) -> None:
    """Issue 12, item 3: before, the killed helper's rows waited 849 s for their lease."""
    n = CLAIM_BATCH * 2
    emails = [f"accept+{i}@d{i % 7}.example" for i in range(n)]
    async with two_processes(tmp_path, emails, accept_delay=0.01) as (server, service, s):
        assert service.helpers is not None
        [helper] = service.helpers._processes
        with capture_logs() as logs:
            firing = asyncio.create_task(fire(service, s))
            assert await until(lambda: helper_sending(tmp_path) > 0)  # the helper is on the wire
            helper.kill()
            await firing  # returns once the bucket is out (the dead helper's claims not counted)
            rows = await ledger_by_email(service.engine)
    assert len(rows) == n
    states = Counter(r["state"] for r in rows.values())
    assert set(states) <= {"sent", "unknown"}, states
    assert states.get("unknown", 0) <= 4  # only what was on the wire: one per SMTP connection at most (its journal)
    released = [e for e in logs if e["event"] == "dispatch_helper_rows_released"]
    assert len(released) == 1 and released[0]["to_planned"] > 0  # its claimed rows went back at once...
    owners = Counter(r["lease_owner"].split("/")[0] for r in rows.values() if r["state"] == "sent")
    assert owners["test-node"] >= released[0]["to_planned"]  # ... and the daemon sent them in the bucket
    received = Counter(rcpt for r in server.accepted() for rcpt in r.rcpt_to)
    assert max(received.values()) == 1  # nobody got two
    sent = {e for e, r in rows.items() if r["state"] == "sent"}
    assert sent <= set(received)


async def test_a_helper_that_dies_while_starting_is_logged_and_the_daemon_runs_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPSLOT_FAILPOINT", "helper_start")  # every start of the helper dies
    emails = [f"accept+{i}@d{i % 3}.example" for i in range(50)]
    with capture_logs() as logs:
        async with two_processes(tmp_path, emails) as (server, service, s):  # start() does not raise
            assert await fire(service, s) == len(emails)
            rows = await ledger_by_email(service.engine)
    failed = [e for e in logs if e["event"] == "dispatch_helper_start_failed"]
    assert failed and failed[0]["helper"] == 1 and failed[0]["exitcode"] == -signal.SIGKILL
    assert Counter(r["state"] for r in rows.values()) == {"sent": len(emails)}
    assert len(server.accepted()) == len(emails)


def helper_sending(tmp_path: Path) -> int:
    """Rows the helper has marked ``sending`` right now (read straight from the SQLite file)."""
    with sqlite3.connect(tmp_path / "topslot.db") as db:
        query = "SELECT count(*) FROM deliveries WHERE state = 'sending' AND lease_owner LIKE 'test-node#w1/%'"
        return int(db.execute(query).fetchone()[0])


async def until(condition: Callable[[], bool], seconds: float = 60) -> bool:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()
