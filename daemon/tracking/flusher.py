"""``ProcessWriter``: the event buffer's sink, writing each batch in a process of its own.

A batch write (delivery lookups, labels, the insert, relabelling: ``EventWriter``) is Python work —
SQLAlchemy's statement handling, building rows, reading results — a few microseconds a hit. Done
on the server's event loop it stalled every request in flight (up to 185 ms with a backlog); done
on a thread of the server's process it still shared the interpreter lock with the loop: whenever
the writer ran Python the loop waited for the lock, and the hand-overs cost more than the work
(measured with ``bench/tracking_load.py``, SQLite: 19,400 requests/s with the writer on a thread,
31,500 with batches thrown away — the same loop, the same answers). So the writer has a process of
its own, and the server's loop only hands each batch over and reads the answer:

- the process is forked from topslot's forkserver (``topslot.forkserver``: nothing of the server's
  loop, threads or connections inherited) when the server starts; it opens its own engine to the
  same database, opened as the server's (``topslot.store.db.EngineSpec``: same schema and
  options): a SQLite file through the blocking ``sqlite3`` module (``sync_sqlite_engine``,
  ``EventWriter.write_blocking``), PostgreSQL through asyncpg on the process's own loop;
- a batch crosses a socket pair as one pickled list of tuples (~1 µs a hit on the server's loop)
  with the server run's ``source`` id; the answer (``Written``) comes back the same way, and its
  counts go to the server's ``/metrics`` (``Written.count``). One batch at a time;
- a failed write is answered as a failure: the buffer keeps the batch and retries it;
- a process that does not answer a batch within ``ANSWER_TIMEOUT`` seconds (stopped, or wedged in
  its database driver: a write takes milliseconds, a lock wait at most SQLite's busy timeout) is
  killed and logged (``tracking_writer_stuck``): the batch stays in the buffer, as for a process
  that ended, and the next batch starts a new process — a stuck writer costs seconds of delay,
  never a full buffer;
- a process that ends (killed, out of memory) is seen at once — end of file on its socket while
  a batch is in flight, its sentinel while it is idle — and logged (``tracking_writer_exited``,
  with its exit code). The batch in flight is kept by the buffer like any failed write, and the
  next batch starts a new process; if the dead one had committed it (killed between its commit and
  its answer), the new one skips the hits already stored (``EventWriter``, by the source's
  ``written_through``): each hit is stored once;
- a new process forgets the server runs that wrote nothing for ``SOURCE_TTL`` (their rows in
  ``tracking_sources``);
- it runs at a lower priority (``NICENESS``): when the cores are busy, answers go first and the
  batches wait in the buffer (which paces clients only when it holds over a tenth of its capacity);
- it ignores SIGTERM and SIGINT (systemd signals the whole service): the server stops it after
  the buffer's last flush by closing its socket, and it also ends when the server's process
  does;
- an in-memory SQLite database cannot be opened twice: there the batch is written on the caller's
  loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import secrets
import signal
import socket
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot import event_loop
from topslot.forkserver import context as forkserver
from topslot.heap import settle_heap
from topslot.logs import get_logger
from topslot.store import tracking_events as store
from topslot.store.db import EngineSpec, engine_spec, is_in_memory, sync_sqlite_engine
from topslot.tracking.classify import DEFAULT_RULES, Rules
from topslot.tracking.hits import Hit
from topslot.tracking.ingest import EventWriter, Written

log = get_logger("topslot.tracking")

PROCESS_NAME = "topslot-tracking-writer"
START_TIMEOUT = 60.0  # seconds for a new writer process to open its database and say it is ready
STOP_TIMEOUT = 10.0  # seconds for it to end once its socket is closed (then it is killed)
# seconds for the answer to one batch (milliseconds of work) before the process is deemed stuck and
# killed: 3 × SQLite's busy timeout (store.db.SQLITE_BUSY_TIMEOUT_MS), the longest a write may wait for a lock
ANSWER_TIMEOUT = 30.0
SOURCE_TTL = timedelta(days=7)  # a server run's written_through is kept this long after its last batch
# Answers wait on the CPU, batches can wait in the buffer: when the cores are busy the scheduler
# runs the server's loop first (measured, SQLite, 2 cores: 0.49-0.50x bare aiohttp at 0, 0.51-0.56x at 19).
NICENESS = 10
_HEADER = struct.Struct("!I")  # each message: its length, then its pickle


class WriterFailed(RuntimeError):
    """The writer process could not write the batch (the database refused it, or the process
    ended): the batch stays in the buffer."""


class _Child:
    """A running writer process and the server's end of its socket."""

    def __init__(self, process: multiprocessing.process.BaseProcess, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):  # fmt: skip
        self.process = process
        self.reader = reader
        self.writer = writer

    async def ask(self, message: Any, timeout: float) -> Any:
        """Send ``message`` and return the answer; ``ConnectionError`` if the process has ended,
        ``TimeoutError`` if it has not answered within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                self.writer.write(_frame(message))
                await self.writer.drain()
                return await _receive(self.reader)
        except TimeoutError:  # an OSError too: not a broken socket
            raise
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise ConnectionError(str(exc)) from exc

    def end(self) -> None:
        """Close the socket (the process ends on its own) and stop watching."""
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            asyncio.get_running_loop().remove_reader(self.process.sentinel)
        self.writer.close()


class ProcessWriter:
    """``await writer(hits)`` stores one batch (``EventWriter``) in the writer process; ``start()``
    starts that process in the background, ``await close()`` ends it (after the buffer's last flush)."""

    def __init__(self, engine: AsyncEngine, rules: Rules = DEFAULT_RULES, *, answer_timeout: float = ANSWER_TIMEOUT):
        self.engine = engine
        self.rules = rules
        self.answer_timeout = answer_timeout
        self.source = secrets.token_hex(16)  # this server run, as its batches' hits are numbered (Hit.seq)
        self.separate = not is_in_memory(engine)
        self._inline = None if self.separate else EventWriter(engine, rules)
        self._child: _Child | None = None
        self._starting: asyncio.Task[_Child] | None = None
        self._in_flight: asyncio.Task[Any] | None = None
        self._closing = False
        self.started = 0  # processes started so far (1 unless one ended)

    @property
    def pid(self) -> int | None:
        """The writer process's id while it runs."""
        return self._child.process.pid if self._child is not None else None

    def start(self) -> None:
        """Start the writer process in the background (idempotent; the first batch waits for it)."""
        if self.separate and self._child is None and self._starting is None and not self._closing:
            self._starting = asyncio.get_running_loop().create_task(self._start(), name="topslot-tracking-writer-start")

    async def __call__(self, hits: Sequence[Hit]) -> Written:
        if self._inline is not None:
            written = await self._inline.write(hits)
        else:
            if self._in_flight is not None:  # a cancelled caller's batch: its answer is read first
                await asyncio.wait({self._in_flight})
            child = await self.ready()
            # a task of its own, shielded: if the caller is cancelled, the answer is still read
            self._in_flight = asyncio.get_running_loop().create_task(self._write(child, hits))
            try:
                written = await asyncio.shield(self._in_flight)
            finally:
                if self._in_flight.done():
                    self._in_flight = None
        written.count()
        return written

    async def _write(self, child: _Child, hits: Sequence[Hit]) -> Written:
        try:
            source = self.source if hits and hits[0].seq else None  # numbered by a buffer (all or none)
            answer = await child.ask((source, [_fields(h) for h in hits]), self.answer_timeout)
        except ConnectionError:
            self._ended(child)
            raise WriterFailed(
                f"the tracking writer process ended while writing the batch (exit code {child.process.exitcode})"
            ) from None
        except TimeoutError:
            log.error("tracking_writer_stuck", pid=child.process.pid, waited_s=self.answer_timeout, hits=len(hits))
            self._ended(child)  # killed: it must not write this batch beside the next process
            raise WriterFailed(
                f"the tracking writer process did not answer within {self.answer_timeout:g} s; killed"
            ) from None
        if answer[0] != "ok":
            raise WriterFailed(answer[1])
        return answer[1]

    async def ready(self) -> _Child:
        """The running writer process (started now if it is not: the first batch waits for it)."""
        if self._child is not None:
            return self._child
        if self._closing:
            raise WriterFailed("the tracking writer is closed")
        self.start()
        starting = self._starting
        assert starting is not None
        try:
            self._child = await asyncio.shield(starting)
        finally:
            if starting.done():
                self._starting = None
        return self._child

    async def _start(self) -> _Child:
        spec = engine_spec(self.engine)
        ours, theirs = socket.socketpair()
        spawning = asyncio.ensure_future(asyncio.to_thread(_spawn, theirs, spec, self.rules))
        try:
            process = await asyncio.shield(spawning)
        except BaseException:
            ours.close()
            spawning.add_done_callback(_kill_started)  # cancelled (the server closes): no process left behind
            raise
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        child = _Child(process, reader, writer)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                answer = await _receive(reader)
        except BaseException as exc:
            child.end()
            process.kill()
            if isinstance(exc, Exception):
                raise WriterFailed(f"the tracking writer process did not start: {type(exc).__name__}") from None
            raise
        if answer[0] != "ready":
            child.end()
            raise WriterFailed(f"the tracking writer process could not open the database: {answer[1]}")
        self.started += 1
        asyncio.get_running_loop().add_reader(process.sentinel, self._on_exit, child)
        log.info("tracking_writer_started", pid=process.pid)
        return child

    def _on_exit(self, child: _Child) -> None:
        """The process ended (its sentinel became readable): noticed now, not at the next batch."""
        child.end()
        if not self._closing:
            self._ended(child)

    def _ended(self, child: _Child) -> None:
        if self._child is not child:
            return
        self._child = None
        child.end()
        if child.process.is_alive():  # its socket broke but it runs on: it must not write beside the next
            child.process.kill()
        log.error("tracking_writer_exited", pid=child.process.pid, exitcode=child.process.exitcode)

    async def close(self) -> None:
        """End the writer process (after the buffer's last flush): its socket closes, it ends."""
        self._closing = True
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.cancel()
            with contextlib.suppress(BaseException):
                self._child = await starting  # started meanwhile: ended below
        if self._in_flight is not None:
            await asyncio.wait({self._in_flight})
        child, self._child = self._child, None
        if child is None:
            return
        child.end()
        with contextlib.suppress(Exception):
            await child.writer.wait_closed()
        process = child.process
        await asyncio.to_thread(process.join, STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, STOP_TIMEOUT)


def _fields(hit: Hit) -> tuple[Any, ...]:
    """A hit as it crosses to the writer process (``Hit(*fields)`` there)."""
    return (hit.kind, hit.delivery_id, hit.occurred_at, hit.method, hit.user_agent, hit.referer, hit.ip,
            hit.campaign_id, hit.link_id, hit.attempts, hit.seq)  # fmt: skip


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _receive(reader: asyncio.StreamReader) -> Any:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return pickle.loads(await reader.readexactly(size))


def _spawn(sock: socket.socket, spec: EngineSpec, rules: Rules) -> multiprocessing.process.BaseProcess:
    """Start the writer process with ``sock`` as its end of the socket pair (blocking: the
    forkserver may have to start first); ``sock`` is closed here once the process has it."""
    try:
        process = forkserver().Process(target=_main, args=(sock, spec, rules), name=PROCESS_NAME, daemon=True)
        process.start()
        return process
    finally:
        sock.close()


def _kill_started(spawning: asyncio.Future[multiprocessing.process.BaseProcess]) -> None:
    if not spawning.cancelled() and spawning.exception() is None:
        spawning.result().kill()


# ---------------------------------------------------------------- the writer process


def _main(sock: socket.socket, spec: EngineSpec, rules: Rules) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the server ends it, after its last flush
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICENESS)
    event_loop.run(_serve(sock, spec, rules))


async def _serve(sock: socket.socket, spec: EngineSpec, rules: Rules) -> None:
    reader, out = await asyncio.open_unix_connection(sock=sock)
    try:
        engine, writer = await _open(spec, rules)
    except Exception as exc:
        out.write(_frame(("error", _describe(exc))))
        await out.drain()
        return
    try:
        settle_heap()  # what lives as long as the process leaves the collector's walks
        out.write(_frame(("ready", os.getpid())))
        await out.drain()
        while True:
            try:
                source, batch = await _receive(reader)
            except (asyncio.IncompleteReadError, OSError):  # the server closed it, or is gone
                return
            hits = [Hit(*fields) for fields in batch]
            try:
                if isinstance(writer.engine, AsyncEngine):
                    answer: tuple[str, Any] = ("ok", await writer.write(hits, source))
                else:
                    answer = ("ok", writer.write_blocking(hits, source))
            except Exception as exc:  # the database refused it: the server keeps the batch
                answer = ("error", _describe(exc))
            out.write(_frame(answer))
            await out.drain()
    finally:
        writer.close()
        if isinstance(writer.engine, Engine):  # SQLite's blocking engine
            writer.engine.dispose()
        await engine.dispose()


async def _open(spec: EngineSpec, rules: Rules) -> tuple[AsyncEngine, EventWriter]:
    """The process's engine and writer, with a connection tried once (an error is reported, not raised later)."""
    before = datetime.now(UTC) - SOURCE_TTL
    if spec.url.startswith("sqlite"):
        engine = spec.open()
        blocking = sync_sqlite_engine(engine)
        with blocking.begin() as conn:
            store.purge_sources(conn, before)
        return engine, EventWriter(blocking, rules)
    engine = spec.open(pool_size=1, max_overflow=1)  # one connection; a second for a reconnect under way
    async with engine.begin() as conn:
        await conn.run_sync(store.purge_sources, before)
    return engine, EventWriter(engine, rules)


def _describe(exc: BaseException) -> str:
    """The error's type and first line (a database error's next lines hold SQL and parameters)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__
