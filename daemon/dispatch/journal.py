"""The hand-over journal: which ``sending`` rows may really have left this process.

The ledger marks a chunk ``sending`` before any of it goes out, so a crash leaves every row of
the chunks in flight ``sending``, and recovery has to make them ``unknown`` (they may have reached
the provider; resending could duplicate them). Most of them never left: they were waiting for a
rate token, a connection or a domain slot. The journal tells them apart. A messenger calls
``handing_over()`` (``topslot.channels.base``) right before the first byte of a message leaves the
process (the SMTP body, an HTTP request), and nothing of it leaves until the call returns; the
journal appends the delivery id to a file and fsyncs it first (only writes it when the provider
drops a repeated message, ``Messenger.drops_repeats``: the IM webhook gateway; after a power loss
such a message may go again, and the gateway drops it). After a crash, a ``sending`` row
whose id is not in its owner's journal provably never left: it goes back to ``planned`` and is
sent after the restart. A message the provider accepted is on record too (its id, the provider's
id for it, billed segments), written as the answer comes but not fsynced: it survives a crash of
the process, and recovery records the row ``sent`` as the dispatcher would have. Only the rows
really on the wire, at most one per open connection, are ``unknown``; after a power loss, those
whose acceptance had not reached the disk too (never one sent twice).

Appends are group-committed: ids handed over while an fsync runs are written and fsynced together
by the next one, so the cost is one sync per batch, not per message. The syncs run in a helper
process (``topslot.dispatch.disk_sync``) while the event loop goes on. Without one (it could not
start, or it died: logged, and the journal syncs by itself from then on), a sync runs on the event
loop's thread while syncs take at most ``INLINE_SYNC_S`` (a preallocated file on a local disk: a
fifth of a millisecond), since handing it to a worker thread and back cost more CPU than the sync
itself (two thread wake-ups and GIL hand-overs per batch: measured, about an eighth of an SMS send);
once one takes longer (a slow or busy disk), the next ones run in a worker thread while the loop goes
on, until one is fast again. Acceptances that come while the helper or a worker thread syncs are
kept in memory and written as soon as it returns (before any id handed over after them): a write to
a file being fsynced can wait for that fsync. A connection whose acceptance is held this way has nothing else on
the wire (its next message waits for the next sync, which writes the acceptance first), so a crash
still leaves at most one ``unknown`` row per connection. One journal per lease owner
(``<node>/<boot>``; a helper process has its own), under ``<var_dir>/journal/``; it is emptied
whenever the process has no row ``sending`` (every outcome recorded), and deleted once recovery
has read it. A journal that cannot be read proves nothing: its rows are ``unknown``, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from topslot.dispatch.disk_sync import SyncHelper, SyncHelperGone
from topslot.durable import fsync_directory
from topslot.logs import get_logger

log = get_logger("dispatch")

SUFFIX = ".handover"
ALLOCATE_BYTES = 1 << 20  # the file grows by this much at a time (written in place)
KEEP_BYTES = 1 << 20  # written from the start again when settled and past this
INLINE_SYNC_S = 0.001  # a sync that took at most this long: the next one runs on the event loop's thread


def journal_path(directory: Path, owner: str) -> Path:
    """The journal file of lease owner ``owner`` (``node/boot``) in ``directory``."""
    return directory / (quote(owner, safe="") + SUFFIX)


def owner_of(path: Path) -> str | None:
    """The lease owner whose journal ``path`` is, or None for another file."""
    return unquote(path.name[: -len(SUFFIX)]) if path.name.endswith(SUFFIX) else None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A provider's acceptance on record: what recovery writes on the row."""

    provider_id: str
    provider: str
    segments: int | None


Record = dict[int, Accepted | None]  # delivery id → handed over (None), or accepted


def read_journal(path: Path) -> Record | None:
    """What ``path`` has on record, by delivery id; None when it cannot be read (it proves nothing).
    A torn last line (a crash mid-write: its fsync never returned, so that send never started) is
    ignored."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return None
    found: Record = {}
    for line in text.split("\n")[:-1]:  # the last piece has no newline yet (or is unused space)
        if "\0" in line:  # unused space, or a line torn by a power loss (its sync never returned)
            continue
        parts = line.split(" ", 3)  # "<id>" (handed over) or "<id> <provider> <segments|-> <provider id>"
        if not parts[0].isdigit():
            continue
        delivery_id = int(parts[0])
        if len(parts) == 4 and parts[3] and (parts[2] == "-" or parts[2].isdigit()):
            found[delivery_id] = Accepted(parts[3], parts[1], None if parts[2] == "-" else int(parts[2]))
        else:
            found.setdefault(delivery_id, None)  # handed over (an unreadable answer proves nothing more)
    return found


class HandoverJournal:
    """This process's journal (see the module docstring). ``mark(id)`` before a message leaves,
    ``accepted(...)`` when its provider took it, ``settled()`` when no row of this process is
    ``sending`` any more.

    The file is preallocated (``ALLOCATE_BYTES`` at a time) and written in place, so committing a
    batch is an ``fdatasync`` that changes no metadata: the cheapest durable write there is. All
    writes happen on the event loop's thread (they are page-cache copies); so does the sync while
    syncs are fast, else it runs in a worker thread (see the module docstring); with its helper
    process, every sync runs there."""

    def __init__(self, path: Path, *, helper: bool = True):
        """``helper``: sync in a helper process (``topslot.dispatch.disk_sync``), else by itself."""
        self.path = path
        self._use_helper = helper
        self._helper: SyncHelper | None = None
        self.syncs = 0  # batches committed (each one sync), wherever the sync ran
        self._fd: int | None = None
        self._offset = 0  # where the next line goes
        self._size = 0  # bytes allocated
        self._grew = False  # allocated since the last sync: the next one must be a full fsync
        self._pending: list[int] = []  # the ids the next sync will commit
        self._syncing = False  # an fsync runs (in a worker thread): writes now would wait for it
        self._sync_s = 0.0  # how long the last sync took (seconds): where the next one runs
        self._answers: list[bytes] = []  # acceptances that came during that fsync, written after it
        self._waiters: list[asyncio.Future[None]] = []  # one per id in ``_pending``
        self._flushing: asyncio.Task[None] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._offset = self._size = 0
        self._allocate(ALLOCATE_BYTES)
        os.fsync(self._fd)
        self._grew = False
        fsync_directory(self.path.parent)  # the file itself survives a power loss
        if self._use_helper and self._helper is None:
            try:
                self._helper = SyncHelper(self._fd)
            except OSError as exc:
                log.warning("handover_journal_syncs_inline", reason=f"no sync helper: {exc}"[:300])

    def mark(self, delivery_id: int, *, synced: bool = True) -> asyncio.Future[None] | None:
        """Put ``delivery_id`` on record: a future done once it is on disk (with whatever came
        meanwhile), failed when it could not be. Await it; cancelling the wait leaves the others'
        waits alone. (A plain future, not a coroutine: it is awaited once per message sent.)

        ``synced=False``, for a message whose provider drops a repeat of it
        (``Messenger.drops_repeats``): written now and not fsynced, None returned (nothing to
        wait for; ``OSError`` raised when it cannot be written). A crash of the process keeps the
        record, which is in the kernel's page cache; a power loss may not, and the message is then
        sent again after the restart, for the provider to drop. While a worker thread fsyncs (a
        slow disk) it is marked as a synced one instead: a write now could wait for that fsync."""
        if self._fd is None:
            raise RuntimeError("the hand-over journal is not open")
        if not synced and not self._syncing:
            self._write(b"%d\n" % delivery_id)
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._pending.append(delivery_id)
        self._waiters.append(waiter)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return waiter

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # the sends ready in this turn of the loop join the batch
        while self._pending:
            ids, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            try:
                fd = self._fd
                assert fd is not None
                self._write("".join(f"{i}\n" for i in ids).encode("ascii"))
                full, self._grew = self._grew, False
                sync = os.fsync if full else os.fdatasync
                if self._helper is not None:  # in another process: the loop goes on meanwhile
                    await self._helper_sync(full, sync, fd)
                elif self._sync_s <= INLINE_SYNC_S:  # fast lately: here, no thread hand-off
                    started = time.perf_counter()
                    sync(fd)
                    self._sync_s = time.perf_counter() - started
                else:  # slow lately: in a worker thread, the loop goes on meanwhile
                    self._syncing = True
                    try:  # timed in the thread: the hand-off's own delay is not the disk's
                        self._sync_s = await loop.run_in_executor(None, _timed, sync, fd)
                    finally:
                        self._syncing = False
                        self._write_answers()
            except BaseException as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            self.syncs += 1
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _helper_sync(self, full: bool, sync: Callable[[int], None], fd: int) -> None:
        """Sync through the helper; once it is gone, here (and by itself from then on)."""
        assert self._helper is not None
        self._syncing = True
        try:
            await self._helper.sync(full)
        except SyncHelperGone as exc:
            log.warning("handover_journal_syncs_inline", reason=str(exc)[:300])
            self._helper.close()
            self._helper = None
            sync(fd)
        finally:
            self._syncing = False
            self._write_answers()

    def accepted(self, delivery_id: int, provider_id: str, provider: str, segments: int | None) -> None:
        """The provider accepted ``delivery_id``: on record for a crash of this process (written,
        not synced; a failure to write only means the row would be ``unknown``)."""
        if self._fd is None:
            return
        answer = " ".join(provider_id.splitlines())  # one line, whatever the provider answered
        line = f"{delivery_id} {provider} {segments or '-'} {answer}\n".encode()
        if self._syncing:  # written once the sync returns (see the module docstring)
            self._answers.append(line)
            return
        with contextlib.suppress(OSError):
            self._write(line)

    def _write_answers(self) -> None:
        """Write the acceptances held while a sync ran (not synced, as any acceptance)."""
        if self._answers and self._fd is not None:
            data, self._answers = b"".join(self._answers), []
            with contextlib.suppress(OSError):
                self._write(data)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        if self._offset + len(data) > self._size:
            self._allocate(max(ALLOCATE_BYTES, len(data)))
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self._offset)
            self._offset += written
            view = view[written:]

    def _allocate(self, more: int) -> None:
        assert self._fd is not None
        os.posix_fallocate(self._fd, self._size, more)
        self._size += more
        self._grew = True

    async def settled(self) -> None:
        """No row of this process is ``sending``: nothing on record matters any more; write from
        the start again (once past ``KEEP_BYTES``: what is left beyond is harmless, being settled)."""
        if self._fd is None or self._offset < KEEP_BYTES or self._pending:
            return
        if self._flushing is not None and not self._flushing.done():
            return
        os.pwrite(self._fd, bytes(self._offset), 0)  # cleared: a shorter line must never meet an old tail
        self._offset = 0

    def close(self, *, remove: bool) -> None:
        """Close the file; ``remove`` it when nothing is ``sending`` (a graceful stop)."""
        if self._helper is not None:
            self._helper.close()
            self._helper = None
        if self._fd is not None:
            self._write_answers()
            os.close(self._fd)
            self._fd = None
        if remove:
            self.path.unlink(missing_ok=True)


def journals(directory: Path, owners: Iterable[str]) -> dict[str, Record | None]:
    """The journal of each of ``owners`` found in ``directory`` (None: present but unreadable).
    An owner without a journal file is left out: nothing can be proven for its rows."""
    found: dict[str, Record | None] = {}
    for owner in owners:
        path = journal_path(directory, owner)
        if path.exists():
            found[owner] = read_journal(path)
    return found


def _timed(sync: Callable[[int], None], fd: int) -> float:
    """Run ``sync(fd)``; how many seconds it took."""
    started = time.perf_counter()
    sync(fd)
    return time.perf_counter() - started
