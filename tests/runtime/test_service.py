"""The daemon in-process on SQLite: start, hot reload of campaign files, systemd notify, SIGHUP."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect as sa_inspect

from runtime.daemon_support import WAIT, LogTap, make_daemon, until
from topslot.campaign import Campaign
from topslot.runtime.notify import Notifier


class RecordingListener:
    def __init__(self) -> None:
        self.calls: list[dict[str, Campaign]] = []

    async def on_campaigns_changed(self, campaigns: Mapping[str, Campaign]) -> None:
        self.calls.append(dict(campaigns))



async def test_start_migrates_loads_and_hot_reloads_campaign_files(
    workdir: Path, logs: LogTap, campaign_text: Callable[..., str]
) -> None:
    listener = RecordingListener()
    campaigns = workdir / "config" / "campaigns"
    async with make_daemon(workdir, logs, listeners=[listener], handle_signals=False) as daemon:
        # start-up: database migrated, the valid campaign active, listener told
        db = workdir / "var" / "topslot.db"
        assert db.is_file()
        async with daemon.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sa_inspect(c).get_table_names())
        assert "alembic_version" in tables and len(tables) > 3
        assert set(daemon.campaigns) == {"spring-2027"}
        assert list(listener.calls[-1]) == ["spring-2027"]
        assert [e["campaign_id"] for e in logs.events("campaign_loaded")] == ["spring-2027"]

        # a new file appears → loaded
        (campaigns / "summer.yaml").write_text(campaign_text("summer-2027", "Summer offer"))
        await until(lambda: "summer-2027" in daemon.campaigns)
        # listeners are told after the registry changes (the scheduler plans first): wait for it
        await until(lambda: set(listener.calls[-1]) == {"spring-2027", "summer-2027"})
        assert daemon.source_of("summer-2027") == (campaigns / "summer.yaml").resolve()

        # a valid edit → updated in place
        (campaigns / "summer.yaml").write_text(campaign_text("summer-2027", "Summer offer, take two"))
        await until(lambda: daemon.campaigns["summer-2027"].name == "Summer offer, take two")
        assert logs.events("campaign_updated")[-1]["campaign_id"] == "summer-2027"

        # a broken edit → every problem logged, the previous good version keeps running
        broken = campaign_text("summer-2027").replace('slots: ["07:30"]', "slots: [7:30]")
        broken = broken.replace("channels: [email]", "channels: [email, fax]")
        (campaigns / "summer.yaml").write_text(broken)
        await until(lambda: any(e["campaign_id"] == "summer-2027" for e in logs.events("campaign_kept_previous")))
        problems = [e for e in logs.events("campaign_problem") if e["path"].endswith("summer.yaml")]
        assert len(problems) >= 2, problems  # both mistakes, not only the first
        assert all(e["problem"].startswith(f"{e['path']}:{e['line']}:{e['column']}: ") for e in problems)
        assert daemon.campaigns["summer-2027"].name == "Summer offer, take two"
        assert "spring-2027" in daemon.campaigns

        # the file is removed → unloaded
        (campaigns / "summer.yaml").unlink()
        await until(lambda: "summer-2027" not in daemon.campaigns)
        assert set(daemon.campaigns) == {"spring-2027"}
        assert logs.events("campaign_unloaded")[-1]["campaign_id"] == "summer-2027"
        await until(lambda: set(listener.calls[-1]) == {"spring-2027"})
    names = [e["event"] for e in logs.events()]
    assert names[0] == "daemon_starting" and names[-1] == "daemon_stopped"
    assert "daemon_ready" in names and "daemon_stopping" in names


async def test_invalid_campaign_at_start_is_reported_and_the_rest_run(
    workdir: Path, logs: LogTap, campaign_text: Callable[..., str]
) -> None:
    (workdir / "config" / "campaigns" / "bad.yaml").write_text(campaign_text("bad-one").replace("2027-05-09", "2027-05-01"))
    async with make_daemon(workdir, logs, handle_signals=False, watch=False) as daemon:
        assert set(daemon.campaigns) == {"spring-2027"}
        assert daemon.problems and all(p.path.endswith("bad.yaml") for p in daemon.problems)
    (ready,) = logs.events("daemon_ready")
    assert ready["campaigns"] == ["spring-2027"] and ready["problems"] == len(daemon.problems)


async def test_systemd_notify_ready_watchdog_stopping(
    workdir: Path, logs: LogTap, notify_socket: Any
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "200000"})
    async with make_daemon(workdir, logs, notifier=notifier, handle_signals=False, watch=False):
        ready = await asyncio.to_thread(notify_socket.receive_until, "READY")
        assert ready["READY"] == "1" and ready["MAINPID"] == str(os.getpid())
        assert ready["STATUS"] == "running: 1 campaign(s)"
        await asyncio.to_thread(notify_socket.receive_until, "WATCHDOG")
        await asyncio.to_thread(notify_socket.receive_until, "WATCHDOG")  # keeps pinging (every 0.1 s)
    stopping = await asyncio.to_thread(notify_socket.receive_until, "STOPPING")
    assert stopping["STOPPING"] == "1"


async def test_sighup_reloads_and_sigterm_stops(
    workdir: Path, logs: LogTap, campaign_text: Callable[..., str]
) -> None:
    daemon = make_daemon(workdir, logs, watch=False)
    runner = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), WAIT)
    (workdir / "config" / "campaigns" / "autumn.yaml").write_text(campaign_text("autumn-2027"))
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: "autumn-2027" in daemon.campaigns)
    assert logs.events("reload_requested")[0]["signal"] == "SIGHUP"
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(runner, WAIT)
    assert logs.events("daemon_stopping")[0]["reason"] == "SIGTERM"
    assert logs.events()[-1]["event"] == "daemon_stopped"


async def test_secrets_never_reach_the_log(workdir: Path, logs: LogTap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPSLOT_SMTP__PRIMARY__PASSWORD", "sup3r-secret-pw")
    monkeypatch.setenv("TOPSLOT_DATABASE_URL", f"sqlite+aiosqlite:///{workdir}/var/sup3r-secret-pw.db")
    async with make_daemon(workdir, logs, handle_signals=False, watch=False):
        pass
    assert logs.events("database_ready")
    assert "sup3r-secret-pw" not in logs.getvalue()


async def test_the_database_password_never_reaches_the_log(
    workdir: Path, logs: LogTap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the URL's user part or as a ``password=`` query parameter: shown as ``***``, and redacted
    wherever else it might appear (the failure reason, a driver's message)."""
    import socket

    from topslot.store.db import DatabaseUnavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    url = f"postgresql+asyncpg://topslot:user-part-pw@127.0.0.1:{port}/x?password=query-part-pw"
    monkeypatch.setenv("TOPSLOT_DATABASE_URL", url)
    with pytest.raises(DatabaseUnavailable):
        async with make_daemon(workdir, logs, handle_signals=False, watch=False):
            pass
    (starting,) = logs.events("daemon_starting")
    assert starting["database"] == f"postgresql+asyncpg://topslot:***@127.0.0.1:{port}/x?password=***"
    assert logs.events("daemon_failed")
    assert "user-part-pw" not in logs.getvalue() and "query-part-pw" not in logs.getvalue()
