"""The sync helper process: syncs a file descriptor it inherited, answers, and is found gone at once."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from tracking.fixtures import process_alive

from topslot.dispatch.disk_sync import SyncHelper, SyncHelperGone
from topslot.dispatch.journal import Accepted, HandoverJournal, journal_path, read_journal


async def test_it_syncs_the_descriptor_it_inherited_in_another_process(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    helper = SyncHelper(fd)
    try:
        assert helper.pid != os.getpid()
        os.write(fd, b"hello\n")
        await helper.sync()
        await helper.sync(full=True)
        assert helper.syncs == 2
    finally:
        helper.close()
        os.close(fd)
    assert not process_alive(helper.pid)  # closed: it exited, and was waited for


async def test_a_failed_sync_raises_the_helpers_errno_and_the_helper_goes_on() -> None:
    """A pipe cannot be synced (EINVAL): the error is the helper's own, from its fsync of that very
    descriptor; the helper itself carries on."""
    read_end, write_end = os.pipe()
    helper = SyncHelper(write_end)
    try:
        for _ in range(2):
            with pytest.raises(OSError) as raised:
                await helper.sync()
            assert raised.value.errno == errno.EINVAL and not isinstance(raised.value, SyncHelperGone)
        assert helper.syncs == 0
    finally:
        helper.close()
        os.close(read_end)
        os.close(write_end)


async def test_a_killed_helper_is_found_gone_at_once_and_stays_gone(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    helper = SyncHelper(fd)
    try:
        await helper.sync()
        os.kill(helper.pid, signal.SIGKILL)
        with pytest.raises(SyncHelperGone):  # its stdout's end of file fails the sync
            await asyncio.wait_for(helper.sync(), 10)
        with pytest.raises(SyncHelperGone):
            await helper.sync()
    finally:
        helper.close()
        os.close(fd)


async def test_the_journal_syncs_in_its_helper_and_holds_acceptances_until_the_sync_returns(tmp_path: Path) -> None:
    journal = HandoverJournal(journal_path(tmp_path, "n/h"))
    journal.open()
    helper = journal._helper
    assert helper is not None
    await asyncio.gather(*(journal.mark(i) for i in range(1, 51)))
    assert read_journal(journal.path) == dict.fromkeys(range(1, 51))
    assert 1 <= helper.syncs == journal.syncs < 50  # group-committed, every sync in the helper

    marking = asyncio.ensure_future(journal.mark(51))
    while not journal._syncing:  # until its sync is in the helper (answered only once this task yields)
        await asyncio.sleep(0)
    journal.accepted(1, "queued as A1", "smtp", None)
    assert read_journal(journal.path) == dict.fromkeys(range(1, 52))  # held: a write now could wait for the sync
    await marking
    assert read_journal(journal.path) == {1: Accepted("queued as A1", "smtp", None)} | dict.fromkeys(range(2, 52))
    journal.close(remove=False)
    assert not process_alive(helper.pid)


async def test_a_journal_whose_helper_died_syncs_by_itself_and_says_so(tmp_path: Path) -> None:
    journal = HandoverJournal(journal_path(tmp_path, "n/d"))
    journal.open()
    helper = journal._helper
    assert helper is not None
    await journal.mark(1)
    os.kill(helper.pid, signal.SIGKILL)
    with capture_logs() as logs:
        await asyncio.wait_for(asyncio.gather(journal.mark(2), journal.mark(3)), 10)  # not lost: synced here
        await journal.mark(4)
    assert read_journal(journal.path) == {1: None, 2: None, 3: None, 4: None} and journal.syncs >= 3
    assert journal._helper is None
    [event] = [e for e in logs if e["event"] == "handover_journal_syncs_inline"]
    assert event["log_level"] == "warning" and "stopped" in event["reason"]
    journal.close(remove=True)


async def test_a_cancelled_wait_keeps_its_place_so_a_later_sync_waits_for_its_own_answer(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    helper = SyncHelper(fd)
    try:
        abandoned = asyncio.ensure_future(helper.sync())
        await asyncio.sleep(0)  # asked
        abandoned.cancel()
        await helper.sync()  # returns on the second answer, not on the abandoned sync's
        loop = asyncio.get_running_loop()
        loop.remove_reader(helper._answers.fileno())
        await asyncio.sleep(0.2)
        with pytest.raises(BlockingIOError):  # nothing left to answer: both answers were read
            os.read(helper._answers.fileno(), 64)
        assert helper.syncs == 1 and not helper._waiters
    finally:
        helper.close()
        os.close(fd)
