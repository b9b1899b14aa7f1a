"""The hand-over journal: which ``sending`` rows may really have left this process.

The ledger marks a chunk ``sending`` before any of it goes out, so a crash leaves every row of
the chunks in flight ``sending``, and recovery has to make them ``unknown`` (they may have reached
the provider; resending could duplicate them). Most of them never left: they were waiting for a
rate token, a connection or a domain slot. The journal tells them apart. A messenger calls
``handing_over()`` right before the first byte of a message leaves the process (the SMTP body, an
HTTP request), and nothing of it leaves until the call returns; the journal appends the delivery
id to a file and fsyncs it first. After a crash, a ``sending`` row whose id is not in its owner's
journal provably never left: it goes back to ``planned`` and is sent after the restart. Only the
rows really on the wire, at most one per open connection, are ``unknown``.

Appends are group-committed: ids handed over while an fsync runs are written and fsynced together
by the next one, so the cost is one fsync per batch, not per message. One journal per lease owner
(``<node>/<boot>``; a helper process has its own), under ``<var_dir>/journal/``; it is emptied
whenever the process has no row ``sending`` (every outcome recorded), and deleted once recovery
has read it. A journal that cannot be read proves nothing: its rows are ``unknown``, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from urllib.parse import quote, unquote

from daemon.logs import get_logger

log = get_logger("dispatch")

SUFFIX = ".handover"

Marker = Callable[[], Awaitable[None]]
_marker: contextvars.ContextVar[Marker | None] = contextvars.ContextVar("handover_marker", default=None)


async def handing_over() -> None:
    """Called by a messenger right before the first byte of the current message leaves the process:
    returns once that is on record (durably). Outside a dispatcher's send (a test, a proof send)
    it returns at once."""
    marker = _marker.get()
    if marker is not None:
        await marker()


def marking(marker: Marker | None) -> contextvars.Token[Marker | None]:
    """Make ``marker`` what ``handing_over`` calls in this task (the dispatcher, per send)."""
    return _marker.set(marker)


def journal_path(directory: Path, owner: str) -> Path:
    """The journal file of lease owner ``owner`` (``node/boot``) in ``directory``."""
    return directory / (quote(owner, safe="") + SUFFIX)


def owner_of(path: Path) -> str | None:
    """The lease owner whose journal ``path`` is, or None for another file."""
    return unquote(path.name[: -len(SUFFIX)]) if path.name.endswith(SUFFIX) else None


def read_journal(path: Path) -> set[int] | None:
    """The delivery ids on record in ``path``; None when it cannot be read (it proves nothing). A
    torn last line (a crash mid-write: its fsync never returned, so that send never started) is
    ignored."""
    try:
        text = path.read_bytes().decode("ascii", "replace")
    except OSError:
        return None
    lines = text.split("\n")
    return {int(line) for line in lines[:-1] if line.isdigit()}  # the last piece has no newline yet


class HandoverJournal:
    """This process's journal (see the module docstring). ``mark(id)`` before a message leaves,
    ``settled()`` when no row of this process is ``sending`` any more."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._pending: list[int] = []
        self._batch: asyncio.Future[None] | None = None  # the batch the next fsync will commit
        self._flushing: asyncio.Task[None] | None = None
        self._written = 0  # bytes in the file

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.fsync(self._fd)
        _fsync_directory(self.path.parent)  # the file itself survives a power loss

    async def mark(self, delivery_id: int) -> None:
        """Put ``delivery_id`` on record; returns once it is fsynced (with whatever came meanwhile)."""
        if self._fd is None:
            raise RuntimeError("the hand-over journal is not open")
        self._pending.append(delivery_id)
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        batch = self._batch
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await asyncio.shield(batch)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            ids, self._pending = self._pending, []
            batch, self._batch = self._batch, None
            assert batch is not None
            data = "".join(f"{i}\n" for i in ids).encode("ascii")
            try:
                await loop.run_in_executor(None, self._append, data)
            except BaseException as exc:
                if not batch.done():
                    batch.set_exception(exc)
                continue
            if not batch.done():
                batch.set_result(None)

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        os.write(self._fd, data)
        os.fsync(self._fd)
        self._written += len(data)

    async def settled(self) -> None:
        """No row of this process is ``sending``: nothing on record matters any more; empty it."""
        if self._fd is None or not self._written or self._pending:
            return
        if self._flushing is not None and not self._flushing.done():
            return
        fd = self._fd
        await asyncio.get_running_loop().run_in_executor(None, os.ftruncate, fd, 0)
        self._written = 0

    def close(self, *, remove: bool) -> None:
        """Close the file; ``remove`` it when nothing is ``sending`` (a graceful stop)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove:
            self.path.unlink(missing_ok=True)


def journals(directory: Path, owners: Iterable[str]) -> dict[str, set[int] | None]:
    """The journal of each of ``owners`` found in ``directory`` (None: present but unreadable).
    An owner without a journal file is left out: nothing can be proven for its rows."""
    found: dict[str, set[int] | None] = {}
    for owner in owners:
        path = journal_path(directory, owner)
        if path.exists():
            found[owner] = read_journal(path)
    return found


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
