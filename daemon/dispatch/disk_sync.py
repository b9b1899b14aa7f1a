"""Syncing a file from a helper process, so the event loop goes on while the disk works.

``SyncHelper(fd)`` starts a small Python process (``python -I -S``: no site, no topslot; ~15 ms and
a few MB) that inherits the descriptor ``fd``. ``await helper.sync(full)`` writes one byte to the
helper's stdin; the helper calls ``os.fdatasync`` (``os.fsync`` when ``full``) on its copy of the
descriptor, the same open file and so the same pages in the kernel's cache, then answers one line:
``0``, or the ``errno`` of the failure. The event loop reads the answer when it comes
(``add_reader``), so nothing of this process waits for the disk.

Why a process: a sync of the hand-over journal (``topslot.dispatch.journal``) waits ~0.1–0.25 ms
for the disk. On the event loop's thread that stalls every send for as long (about 9 % of one
process's time sending email as fast as it can); in a worker thread the thread needs the
interpreter lock back after every sync, and waiting for it slowed sending by 8 %. A process has a
lock of its own: sending email to ``smtp-sink`` went 1.04× as fast with one dispatch process and
1.07× with two (bench/send_pipeline.py, docs/pipeline.md).

Contract:

- Syncs are answered in the order they were asked; a sync whose wait was cancelled is still done
  (and its answer read), so a later sync never returns on an earlier one's answer.
- ``sync`` raises ``OSError`` (with the helper's ``errno``) when the sync itself failed, and
  ``SyncHelperGone`` when the helper is not there to do it: it died (killed, out of memory; found
  at once, as its stdout reaches end of file), or ``close`` was called. A helper that is gone stays
  gone: the caller syncs by itself from then on.
- The helper exits when its stdin closes: on ``close``, or when this process ends in any way. It
  runs in a session of its own, so a Ctrl-C in a terminal reaches this process only, which then
  stops in its own order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import deque

_PROGRAM = """\
import os, sys
fd = int(sys.argv[1])
while (asked := os.read(0, 1)):
    try:
        (os.fsync if asked == b"f" else os.fdatasync)(fd)
        answer = b"0\\n"
    except OSError as exc:
        answer = b"%d\\n" % (exc.errno or 0)
    os.write(1, answer)
"""


class SyncHelperGone(OSError):
    """The helper process is not there (it died, or was closed): sync by yourself."""


class SyncHelper:
    """A helper process syncing one file descriptor (see the module docstring)."""

    def __init__(self, fd: int):
        """Start the helper for ``fd`` (``OSError`` when it cannot be started)."""
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _PROGRAM, str(fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            pass_fds=(fd,),
            start_new_session=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._asks = self._process.stdin
        self._answers = self._process.stdout
        os.set_blocking(self._answers.fileno(), False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()  # one per sync asked, answered in order
        self._read = b""  # an answer's start, before its newline came
        self._gone = False
        self.syncs = 0  # done by the helper and answered

    @property
    def pid(self) -> int:
        return self._process.pid

    async def sync(self, full: bool = False) -> None:
        """Sync the file: ``os.fsync`` when ``full`` (its size or allocation changed), else
        ``os.fdatasync``; returns once the helper says it is done (see the contract)."""
        if self._gone:
            raise SyncHelperGone("the sync helper has stopped")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._forget_loop()
            loop.add_reader(self._answers.fileno(), self._answered)
            self._loop = loop
        try:
            os.write(self._asks.fileno(), b"f" if full else b"d")
        except OSError as exc:  # its stdin is closed: it has exited
            self._stopped()
            raise SyncHelperGone(f"the sync helper has stopped ({exc})") from None
        waiter = loop.create_future()
        self._waiters.append(waiter)  # a wait cancelled meanwhile keeps its place: its answer still comes
        await waiter

    def _answered(self) -> None:
        try:
            data = os.read(self._answers.fileno(), 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # end of file: the helper is gone
            self._stopped()
            return
        self._read += data
        while b"\n" in self._read:
            line, _, self._read = self._read.partition(b"\n")
            if not self._waiters:
                continue
            waiter = self._waiters.popleft()
            if waiter.done():  # its wait was cancelled: the answer is not needed
                continue
            errno = int(line or b"0")
            if errno:
                waiter.set_exception(OSError(errno, f"sync failed in the helper: {os.strerror(errno)}"))
            else:
                self.syncs += 1
                waiter.set_result(None)

    def _stopped(self) -> None:
        self._gone = True
        self._forget_loop()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(SyncHelperGone("the sync helper stopped before it answered"))

    def _forget_loop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._answers.fileno())
        self._loop = None

    def close(self) -> None:
        """Stop the helper (it exits as its stdin closes) and wait for it, killing it after a second."""
        self._stopped()
        with contextlib.suppress(OSError):
            self._asks.close()
        self._answers.close()
        try:
            self._process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:  # a sync stuck in the kernel: it ends with the disk's answer
            self._process.kill()
