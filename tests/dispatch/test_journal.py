"""The hand-over journal: ids on record before a message leaves, group-committed, read back after a crash."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from daemon.channels.base import handing_over, on_handover
from daemon.dispatch.journal import HandoverJournal, journal_path, journals, owner_of, read_journal


async def test_marks_are_on_disk_when_mark_returns_and_concurrent_ones_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = HandoverJournal(journal_path(tmp_path / "journal", "node-a/1f2e"))
    journal.open()
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    await asyncio.gather(*(journal.mark(i) for i in range(1, 101)))
    assert read_journal(journal.path) == set(range(1, 101))  # every id is there once mark returned
    assert 1 <= len(fsyncs) < 100  # batched: not one fsync per message
    journal.close(remove=False)


async def test_settled_empties_it_and_close_removes_it(tmp_path: Path) -> None:
    journal = HandoverJournal(journal_path(tmp_path, "n/b"))
    journal.open()
    await journal.mark(7)
    await journal.settled()
    assert read_journal(journal.path) == set()
    await journal.mark(8)  # appends after the truncation
    assert read_journal(journal.path) == {8}
    journal.close(remove=True)
    assert not journal.path.exists()


def test_a_torn_last_line_is_not_on_record(tmp_path: Path) -> None:
    path = journal_path(tmp_path, "n/b")
    path.write_bytes(b"11\n12\n1")  # the crash hit mid-write: that fsync never returned, its send never began
    assert read_journal(path) == {11, 12}


def test_owners_and_their_files(tmp_path: Path) -> None:
    path = journal_path(tmp_path, "host:1#w2/abcd")
    assert "/" not in path.name and owner_of(path) == "host:1#w2/abcd"
    path.write_text("5\n")
    (tmp_path / "other.txt").write_text("x")
    assert owner_of(tmp_path / "other.txt") is None
    assert journals(tmp_path, ["host:1#w2/abcd", "gone/ffff"]) == {"host:1#w2/abcd": {5}}


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
