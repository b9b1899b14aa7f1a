"""``Heartbeat``: this process's row in ``processes``, refreshed from a thread of its own, and the
fence that keeps a node which may have been declared dead from handing anything over.

How a node is known dead (docs/scale-out.md): every daemon and helper process writes its heartbeat
every ``node_timeout_s / 3`` seconds. A process whose heartbeat is older than ``node_timeout_s`` and
that did not stop gracefully is dead to the others (``DispatchService`` watches for them): its
``claimed`` rows go back to ``planned`` and are sent by a live node at once, its ``sending`` rows
become ``unknown``. The 15-minute lease stays behind that as the last safety net.

The heartbeat is written from a thread with its own event loop and engine (opened with
``topslot.store.db.reopen``), so an event loop busy with a burst does not look dead; a process that
is stopped (SIGSTOP, a frozen VM) or cut off from the database does. The fence is the other half:
a process that could not write its heartbeat for ``2/3`` of the timeout may already be declared
dead, and its rows may be someone else's; ``fresh()`` is then False, and the dispatcher hands no
message over (``topslot.channels.base.handing_over``) until a heartbeat is written again. The rows
it held are fenced twice: in the database (every transition re-checks owner, epoch and state) and
here, before a byte leaves.

Time is the wall clock of each node (keep the nodes' clocks in sync with NTP: the timeout is
seconds, skew is milliseconds) and the monotonic clock for the fence (it goes on while a process is
stopped, which is the point).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.clock import SystemClock
from topslot.errors import TransientSendError
from topslot.logs import get_logger
from topslot.store import status
from topslot.store.db import is_in_memory, reopen

log = get_logger("dispatch")

THREAD_NAME = "topslot-heartbeat"
FENCE_SHARE = 2 / 3  # of node_timeout_s: stale for this long, a process fences itself
BEAT_SHARE = 1 / 3  # of node_timeout_s: how often the heartbeat is written
FENCE_POLL = 0.2  # seconds: a fenced hand-over looks again this often


class NodeFenced(TransientSendError):
    """This process was found dead by another node (its rows were taken back): it hands nothing
    over any more, and stops (the daemon exits non-zero, so systemd starts it afresh; a helper
    exits and its daemon starts another)."""

    def __init__(self, owner: str):
        super().__init__(f"{owner} was found dead by another node: its rows are no longer its own", code="fenced")


@dataclass(frozen=True, slots=True)
class Identity:
    """What a process's heartbeat row says of it (``topslot status``)."""

    owner: str  # the lease owner: node/boot (a helper: node#wK/boot)
    node: str
    role: str  # daemon | helper
    pid: int
    version: str
    started_at: datetime


class Heartbeat:
    """Writes ``identity``'s heartbeat every ``timeout * BEAT_SHARE`` seconds until ``stop``.

    ``start`` writes the first one before it returns (a process that cannot reach its database
    fails there, as at any start). ``fresh()`` is True while the last successful write is less than
    ``timeout * FENCE_SHARE`` seconds old (monotonic); ``settled()`` is True once the heartbeat has
    been fresh, without a break, for a whole ``timeout``: only then does this process judge others
    dead (after a database outage every node's heartbeat is old: none may take the others' rows
    before they had the time to write theirs again). An in-memory SQLite database (tests) cannot
    be opened twice: there the heartbeat runs as a task on the caller's loop."""

    def __init__(
        self, engine: AsyncEngine, identity: Identity, timeout: float, *, wall: SystemClock | None = None,
        on_declared_dead: Callable[[], None] | None = None,
    ):  # fmt: skip
        self.engine = engine
        self.on_declared_dead = on_declared_dead  # called on the starting loop, once
        self.declared_dead = False
        self.identity = identity
        self.timeout = timeout
        self.wall = wall or SystemClock()
        self.beats = 0  # heartbeats written
        self._last_ok = time.monotonic()
        self._fresh_since = self._last_ok
        self._fenced = False
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # the beating loop and its wake-up, set by the thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._home: asyncio.AbstractEventLoop | None = None  # the loop that started it

    # ------------------------------------------------------------ the fence

    def fresh(self) -> bool:
        """Whether this process may hand messages over: its heartbeat is recent enough that nobody
        can have declared it dead. Logs ``node_fenced`` / ``node_unfenced`` on each change."""
        age = time.monotonic() - self._last_ok
        fresh = age < self.timeout * FENCE_SHARE and not self.declared_dead
        if fresh == self._fenced:  # a change
            self._fenced = not fresh
            if self._fenced:
                log.error("node_fenced", owner=self.identity.owner, heartbeat_age_s=round(age, 1),
                          fence_after_s=round(self.timeout * FENCE_SHARE, 1))  # fmt: skip
            else:
                log.warning("node_unfenced", owner=self.identity.owner)
        return fresh

    async def unfenced(self) -> None:
        """Return once this process may hand a message over (``fresh``), at once while it may; raise
        ``NodeFenced`` if it was found dead meanwhile (what a dispatcher awaits before each hand-over)."""
        while not self.fresh():
            if self.declared_dead:
                raise NodeFenced(self.identity.owner)
            await asyncio.sleep(FENCE_POLL)

    def settled(self) -> bool:
        """Fresh without a break for a whole timeout: this process may judge others (see the class)."""
        return self.fresh() and time.monotonic() - self._fresh_since >= self.timeout

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._home = asyncio.get_running_loop()
        await self._beat_once(self.engine)
        if is_in_memory(self.engine):
            self._task = asyncio.create_task(self._run(self.engine), name="heartbeat")
            return
        pooled = self.engine.url.get_backend_name() == "postgresql"
        engine = reopen(self.engine, **({"pool_size": 1, "max_overflow": 1} if pooled else {}))
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(engine, own=True),), name=THREAD_NAME,
                                        daemon=True)  # fmt: skip
        self._thread.start()

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop beating; ``graceful``: mark the process stopped (not dead: nobody takes its rows)."""
        self._stop.set()
        with self._lock:
            if self._loop is not None and self._wake is not None:
                self._loop.call_soon_threadsafe(self._wake.set)
        if self._task is not None:
            await self._task
            self._task = None
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
            self._thread = None
        if graceful:
            with contextlib.suppress(Exception):  # best effort: a stale row says the same, later
                await status.stopped(self.engine, self.identity.owner, self.wall.now())

    # ------------------------------------------------------------ the beat

    async def _run(self, engine: AsyncEngine, *, own: bool = False) -> None:
        """Beat until stopped; ``own``: ``engine`` is this loop's, disposed at the end."""
        wake = asyncio.Event()
        with self._lock:
            self._loop, self._wake = asyncio.get_running_loop(), wake
        try:
            while not self._stop.is_set() and not self.declared_dead:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.timeout * BEAT_SHARE)
                    return
                await self._beat_once(engine, quiet=True)
        finally:
            with self._lock:
                self._loop = self._wake = None
            if own:
                await engine.dispose()

    async def _beat_once(self, engine: AsyncEngine, *, quiet: bool = False) -> None:
        i = self.identity
        try:
            alive = await status.heartbeat(
                engine, owner=i.owner, node=i.node, role=i.role, pid=i.pid, version=i.version,
                started_at=i.started_at, now=self.wall.now(),
            )  # fmt: skip
        except Exception as exc:
            if not quiet:
                raise
            if not self._failing:  # once per outage
                log.warning("heartbeat_failed", error=repr(exc)[:300])
            self._failing = True
            return
        if not alive:
            self._found_dead()
            return
        now = time.monotonic()
        if now - self._last_ok >= self.timeout * FENCE_SHARE:  # a break: settled again only a timeout later
            self._fresh_since = now
        self._last_ok = now
        self.beats += 1
        if self._failing:
            log.info("heartbeat_recovered")
        self._failing = False

    def _found_dead(self) -> None:
        """Another node found this process dead: fenced for good (see ``NodeFenced``)."""
        if self.declared_dead:
            return
        self.declared_dead = True
        log.error("node_declared_dead", owner=self.identity.owner)
        if self.on_declared_dead is not None and self._home is not None and not self._home.is_closed():
            self._home.call_soon_threadsafe(self.on_declared_dead)
