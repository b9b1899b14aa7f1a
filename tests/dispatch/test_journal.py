"""The hand-over journal: ids on record before a message leaves, group-committed, read back after a crash."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from topslot.channels.base import handing_over, on_handover
from topslot.dispatch.journal import Accepted, HandoverJournal, journal_path, journals, owner_of, read_journal


async def test_marks_are_on_disk_when_mark_returns_and_concurrent_ones_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = HandoverJournal(journal_path(tmp_path / "journal", "node-a/1f2e"), helper=False)
    journal.open()
    fsyncs: list[int] = []
    real_sync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (fsyncs.append(fd), real_sync(fd))[1])
    await asyncio.gather(*(journal.mark(i) for i in range(1, 101)))
    assert read_journal(journal.path) == dict.fromkeys(range(1, 101))  # every id is there once mark returned
    assert 1 <= len(fsyncs) < 100  # batched: not one sync per message (fdatasync: the file is preallocated)
    journal.close(remove=False)


async def test_an_unsynced_mark_is_written_before_it_returns_and_never_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For a provider that drops repeats: on record for a crash of the process (in the file, read
    by another reader at once), with no sync; synced marks beside them are group-committed as ever."""
    journal = HandoverJournal(journal_path(tmp_path, "n/im"), helper=False)
    journal.open()
    syncs: list[int] = []
    real_sync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real_sync(fd))[1])
    assert [journal.mark(i, synced=False) for i in (1, 2, 3)] == [None, None, None]
    assert read_journal(journal.path) == {1: None, 2: None, 3: None} and syncs == []
    journal.accepted(2, "wecom:gw-2", "wecom", None)
    await asyncio.gather(journal.mark(4), journal.mark(5))  # an SMS beside them: fsynced, once for both
    assert read_journal(journal.path) == {1: None, 2: Accepted("wecom:gw-2", "wecom", None), 3: None, 4: None, 5: None}
    assert len(syncs) == 1
    journal.close(remove=False)
    with pytest.raises(RuntimeError, match="not open"):
        journal.mark(6, synced=False)


async def test_an_unsynced_mark_during_a_worker_threads_sync_waits_for_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = HandoverJournal(journal_path(tmp_path, "n/busy"), helper=False)
    journal.open()
    started, release = threading.Event(), threading.Event()
    loop_thread = threading.get_ident()
    real_sync = os.fdatasync

    def slow_sync(fd: int) -> None:
        if threading.get_ident() == loop_thread:
            time.sleep(0.002)  # slow: the next sync goes to a worker thread
        else:
            started.set()
            release.wait(5)
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_sync)
    await journal.mark(1)
    syncing = asyncio.ensure_future(journal.mark(2))  # in a worker thread, held until released
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    waiter = journal.mark(3, synced=False)  # a write now could wait for that fsync: it joins the next sync
    assert waiter is not None and not waiter.done() and 3 not in (read_journal(journal.path) or {})
    release.set()
    await asyncio.gather(syncing, waiter)
    assert read_journal(journal.path) == {1: None, 2: None, 3: None}
    journal.close(remove=False)


async def test_a_slow_sync_sends_the_next_ones_to_a_worker_thread_and_acceptances_meanwhile_wait_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = HandoverJournal(journal_path(tmp_path, "n/slow"), helper=False)
    journal.open()
    threads: list[int] = []
    real_sync = os.fdatasync
    loop_thread = threading.get_ident()
    started, release = threading.Event(), threading.Event()

    def slow_sync(fd: int) -> None:
        threads.append(threading.get_ident())
        if threading.get_ident() == loop_thread:
            time.sleep(0.002)  # a slow disk: over INLINE_SYNC_S (1 ms)
        else:
            started.set()
            release.wait(5)  # until the acceptance below has come
            time.sleep(0.002)  # and slow in itself: the acceptance may come within the 1 ms
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_sync)
    await journal.mark(1)  # fast so far: synced on the loop's thread (slowly)
    assert threads == [loop_thread]

    async def answer_during_the_sync() -> None:
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)  # the sync is running
        journal.accepted(1, "SM1", "twilio", 1)
        assert read_journal(journal.path) == {1: None, 2: None}  # held: a write now would wait for the sync
        release.set()

    await asyncio.gather(journal.mark(2), answer_during_the_sync())
    assert threads[1] != loop_thread  # slow lately: a worker thread
    assert read_journal(journal.path) == {1: Accepted("SM1", "twilio", 1), 2: None}  # written once it returned
    # a fast disk again, deterministically: a loaded machine's real fsync can itself pass 1 ms
    monkeypatch.setattr(os, "fdatasync", lambda fd: threads.append(threading.get_ident()))
    await journal.mark(3)  # still in a worker thread (the last sync was slow), and fast again
    await journal.mark(4)  # back on the loop's thread
    assert threads[2] != loop_thread and threads[3] == loop_thread
    journal.close(remove=False)


async def test_settled_empties_it_once_it_is_large_and_close_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = HandoverJournal(journal_path(tmp_path, "n/b"))
    journal.open()
    await journal.mark(7)
    await journal.settled()
    assert read_journal(journal.path) == {7: None}  # small: kept (harmless: row 7 is settled in the ledger)
    monkeypatch.setattr("topslot.dispatch.journal.KEEP_BYTES", 1)
    await journal.settled()
    assert read_journal(journal.path) == {}
    await journal.mark(8)  # appends after the truncation
    assert read_journal(journal.path) == {8: None}
    journal.close(remove=True)
    assert not journal.path.exists()


def test_a_torn_last_line_is_not_on_record(tmp_path: Path) -> None:
    path = journal_path(tmp_path, "n/b")
    path.write_bytes(b"11\n12\n1")  # the crash hit mid-write: that fsync never returned, its send never began
    assert read_journal(path) == {11: None, 12: None}


async def test_an_acceptance_is_on_record_with_what_recovery_writes(tmp_path: Path) -> None:
    journal = HandoverJournal(journal_path(tmp_path, "n/b"))
    journal.open()
    await journal.mark(5)
    journal.accepted(5, "2.0.0 Ok: queued as 4Xk9\nQ", "smtp", None)
    await journal.mark(6)
    journal.accepted(6, "SM0123456789abcdef0123456789abcdef", "twilio", 2)
    await journal.mark(7)  # handed over, no answer yet: on the wire
    journal.close(remove=False)
    assert read_journal(journal.path) == {
        5: Accepted("2.0.0 Ok: queued as 4Xk9 Q", "smtp", None),
        6: Accepted("SM0123456789abcdef0123456789abcdef", "twilio", 2),
        7: None,
    }


def test_owners_and_their_files(tmp_path: Path) -> None:
    path = journal_path(tmp_path, "host:1#w2/abcd")
    assert "/" not in path.name and owner_of(path) == "host:1#w2/abcd"
    path.write_text("5\n")
    (tmp_path / "other.txt").write_text("x")
    assert owner_of(tmp_path / "other.txt") is None
    assert journals(tmp_path, ["host:1#w2/abcd", "gone/ffff"]) == {"host:1#w2/abcd": {5: None}}


async def test_handing_over_calls_the_marker_of_its_task_only() -> None:
    calls: list[str] = []

    async def marker() -> None:
        calls.append("marked")

    async def send() -> None:
        on_handover(marker)
        await handing_over()

    await asyncio.create_task(send())
    await handing_over()  # outside a dispatcher's send: nothing to record
    assert calls == ["marked"]


async def test_written_from_the_start_again_an_old_longer_line_never_shows_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = HandoverJournal(journal_path(tmp_path, "n/b"))
    journal.open()
    await journal.mark(123456)
    journal.accepted(123456, "queued as Q1", "smtp", None)
    monkeypatch.setattr("topslot.dispatch.journal.KEEP_BYTES", 1)
    await journal.settled()  # everything settled: the next line goes at the start
    await journal.mark(7)
    journal.close(remove=False)
    assert read_journal(journal.path) == {7: None}  # not "3456 smtp - queued as Q1" from the old tail


def test_a_journal_that_cannot_be_created_is_logged_and_the_daemon_sends_without_it(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from topslot.dispatch.service import open_journal

    (tmp_path / "var").write_text("a file where the var directory should be")
    with capture_logs() as logs:
        journal = open_journal(tmp_path / "var" / "journal", "node/boot")
    assert journal is None
    [event] = [e for e in logs if e["event"] == "handover_journal_unavailable"]
    assert event["log_level"] == "warning" and event["path"].endswith("node%2Fboot.handover")


async def test_recovery_trusts_the_journals_of_gone_processes_only(tmp_path: Path) -> None:
    """A row of an earlier run of this node missing from that run's journal never left: planned
    again. A row of this very process whose lease ran out is not settled by its (live) journal: the
    send may still be under way, so it is unknown, as without a journal."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update
    from store.sending_rows import add_campaign, add_contact, add_leased_row

    from topslot.clock import FakeClock
    from topslot.dispatch.service import DispatchService
    from topslot.settings import Settings
    from topslot.store.db import open_engine, upgrade
    from topslot.store.schema import deliveries

    now = datetime(2027, 5, 6, 7, 0, tzinfo=UTC)
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await upgrade(engine)
    settings = Settings(config_dir=tmp_path, var_dir=tmp_path / "var", default_timezone="UTC")
    service = DispatchService(engine, settings, FakeClock(now), node="n1")
    try:
        earlier = "n1/0ld0"
        HandoverJournal(journal_path(settings.var_dir / "journal", earlier), helper=False).open()  # nothing
        rows = {}
        async with engine.begin() as conn:
            await add_campaign(conn, "c", "C", now)
            for name, owner in (("earlier", earlier), ("mine", service.owner)):
                contact = await add_contact(conn, now, consent=["email"], external_id=name, email=f"{name}@x.example")
                rows[name] = await add_leased_row(
                    conn, campaign_id="c", contact_id=contact, channel="email", owner=owner, at=now,
                    timezone="UTC", tz_source="contact",
                )  # fmt: skip
            await conn.execute(update(deliveries).values(lease_expires_utc=now - timedelta(minutes=1)))
        counts = await service.recover()
        async with engine.connect() as conn:
            states = dict((await conn.execute(select(deliveries.c.id, deliveries.c.state))).all())
    finally:
        await service.close()
        await engine.dispose()
    assert states == {rows["earlier"]: "planned", rows["mine"]: "unknown"}
    assert counts["sending_to_planned"] == 1 and counts["sending_to_unknown"] == 1
    assert not journal_path(settings.var_dir / "journal", earlier).exists()  # read, and gone
