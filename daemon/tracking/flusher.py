"""``ThreadedWriter``: the event buffer's sink, writing each batch on a thread of its own.

A batch write (delivery lookups, labels, the insert, relabelling: ``EventWriter``) costs the thread
that runs it a few milliseconds of Python — SQLAlchemy statement handling, building rows, reading
results — even when the database driver does its own work elsewhere. Run on the server's event
loop, that time is a stall of every request in flight (measured: up to 185 ms with a backlog).
So the writer has a thread of its own and an engine of its own to the same database, and the
server's loop only hands a batch over and gets the result back:

- a SQLite file: a *blocking* engine (``topslot.store.db.sync_sqlite_engine``: the ``sqlite3``
  module on this thread, same pragmas) and ``EventWriter.write_blocking``. Through aiosqlite each
  statement would be several trips between its thread and the writer's event loop, and every trip
  takes the interpreter lock back from the server's busy loop (a wait of up to 5 ms each: measured,
  300 ms a batch of 2,000 at 7,000 hits/s, the buffer behind and answers paced);
- PostgreSQL: an event loop of its own on the thread, an asyncpg engine opened like the server's
  (``topslot.store.db.reopen``: same schema and options; a connection belongs to the loop that
  opened it) and ``EventWriter.write``;
- an in-memory SQLite database cannot be opened twice: there the batch is written on the caller's
  loop.

The ``EventBuffer`` is unchanged: one batch at a time, a failure re-queues the batch on the
server's loop (hits are only touched there), ``close`` flushes before the thread stops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store.db import is_in_memory, reopen, sync_sqlite_engine
from topslot.tracking.classify import DEFAULT_RULES, Rules
from topslot.tracking.hits import Hit
from topslot.tracking.ingest import EventWriter, Written

THREAD_NAME = "topslot-tracking-writer"


class ThreadedWriter:
    """``await writer(hits)`` stores one batch (``EventWriter``) on the writer thread."""

    def __init__(self, engine: AsyncEngine, rules: Rules = DEFAULT_RULES):
        self.engine = engine
        self.rules = rules
        self.threaded = not is_in_memory(engine)
        self._blocking = engine.url.get_backend_name() == "sqlite"
        self._inline = None if self.threaded else EventWriter(engine, rules)
        self._writer: EventWriter | None = None
        self._executor: ThreadPoolExecutor | None = None  # SQLite: the blocking writer's thread
        self._loop: asyncio.AbstractEventLoop | None = None  # PostgreSQL: the writer thread's loop
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent; also done by the first batch)."""
        if not self.threaded or self._writer is not None:
            return
        if self._blocking:
            engine = sync_sqlite_engine(self.engine)
            self._executor = ThreadPoolExecutor(max_workers=1, initializer=_name_thread)
            self._executor.submit(_connect, engine)  # the thread starts now, with its connection open
            self._writer = EventWriter(engine, self.rules)
            return
        loop = asyncio.new_event_loop()
        # one connection is all one writer uses; a second one for a reconnect under way
        self._writer = EventWriter(reopen(self.engine, pool_size=1, max_overflow=1), self.rules)
        self._loop = loop
        self._thread = threading.Thread(target=_run, args=(loop,), name=THREAD_NAME, daemon=True)
        self._thread.start()

    async def __call__(self, hits: Sequence[Hit]) -> Written:
        if self._inline is not None:
            return await self._inline.write(hits)
        if self._writer is None:
            self.start()
        assert self._writer is not None
        future: Future[Written]
        if self._executor is not None:
            future = self._executor.submit(self._writer.write_blocking, list(hits))
        else:
            assert self._loop is not None
            future = asyncio.run_coroutine_threadsafe(self._writer.write(list(hits)), self._loop)
        # shielded: if the caller is cancelled, the batch is still written (never half-known)
        return await asyncio.shield(asyncio.wrap_future(future))

    async def close(self) -> None:
        """Close the writer's engine and stop the thread (after the buffer's last flush)."""
        writer, executor, loop, thread = self._writer, self._executor, self._loop, self._thread
        self._writer = self._executor = self._loop = self._thread = None
        if writer is None:
            return
        engine = writer.engine
        if executor is not None:
            try:
                await asyncio.wrap_future(executor.submit(engine.dispose))
            finally:
                await asyncio.to_thread(executor.shutdown)
            return
        assert loop is not None and thread is not None and isinstance(engine, AsyncEngine)
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(engine.dispose(), loop))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)


def _name_thread() -> None:
    threading.current_thread().name = THREAD_NAME


def _connect(engine: Engine) -> None:
    with engine.connect():
        pass


def _run(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()
