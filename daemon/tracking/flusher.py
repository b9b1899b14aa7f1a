"""``ThreadedWriter``: the event buffer's sink, writing each batch on a thread of its own.

A batch write (delivery lookups, labels, the insert, relabelling: ``EventWriter``) costs the thread
that runs it a few milliseconds of Python — SQLAlchemy statement handling, building rows, reading
results — even when the database driver does its own work elsewhere. Run on the server's event
loop, that time is a stall of every request in flight (measured: up to 185 ms with a backlog).
So the writer has its own thread, its own event loop and its own engine (opened like the server's
with ``topslot.store.db.reopen``: same database, schema and pragmas; a connection belongs to the
loop that opened it), and the server's loop only hands a batch over and gets the result back.

The ``EventBuffer`` is unchanged: one batch at a time, a failure re-queues the batch on the
server's loop (hits are only touched there), ``close`` flushes before the thread stops. An
in-memory SQLite database cannot be opened twice, so there the batch is written on the caller's
loop, as before.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store.db import is_in_memory, reopen
from topslot.tracking.classify import DEFAULT_RULES, Rules
from topslot.tracking.hits import Hit
from topslot.tracking.ingest import EventWriter, Written

THREAD_NAME = "topslot-tracking-writer"


class ThreadedWriter:
    """``await writer(hits)`` stores one batch (``EventWriter.write``) on the writer thread."""

    def __init__(self, engine: AsyncEngine, rules: Rules = DEFAULT_RULES):
        self.engine = engine
        self.rules = rules
        self.threaded = not is_in_memory(engine)
        self._inline = None if self.threaded else EventWriter(engine, rules)
        self._writer: EventWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent; also done by the first batch)."""
        if not self.threaded or self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        # one connection is all one writer uses; a second one for a reconnect under way
        engine = reopen(self.engine, **({"pool_size": 1, "max_overflow": 1} if self._pooled() else {}))
        self._writer = EventWriter(engine, self.rules)
        self._loop = loop
        self._thread = threading.Thread(target=_run, args=(loop,), name=THREAD_NAME, daemon=True)
        self._thread.start()

    def _pooled(self) -> bool:
        return self.engine.url.get_backend_name() == "postgresql"

    async def __call__(self, hits: Sequence[Hit]) -> Written:
        if self._inline is not None:
            return await self._inline.write(hits)
        if self._loop is None:
            self.start()
        assert self._loop is not None and self._writer is not None
        future = asyncio.run_coroutine_threadsafe(self._writer.write(list(hits)), self._loop)
        # shielded: if the caller is cancelled, the batch is still written (never half-known)
        return await asyncio.shield(asyncio.wrap_future(future))

    async def close(self) -> None:
        """Close the writer's engine and stop the thread (after the buffer's last flush)."""
        loop, thread, writer = self._loop, self._thread, self._writer
        self._loop = self._thread = self._writer = None
        if loop is None or thread is None or writer is None:
            return
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(writer.engine.dispose(), loop))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)


def _run(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()
