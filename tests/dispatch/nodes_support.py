"""Several real ``topslot run`` nodes on one PostgreSQL database, sending one campaign's email
bucket to one SMTP server on 127.0.0.1: the scale-out tests (``test_nodes.py``) and
``bench/nodes.py``.

- ``pg_database``: a fresh database ``topslot_nodes_<random>`` on the server of
  ``TOPSLOT_TEST_DATABASE_URL`` (optionally a copy of a template database), dropped afterwards
  whatever happens (``WITH (FORCE)``: a node stopped by SIGSTOP may still hold connections).
- ``Cluster``: one installation. Its config is ``crash_support``'s (one campaign, one email slot at
  ``due``, SMTP server ``local``; no big message), its database migrated once by
  ``topslot db upgrade`` and its contacts imported by ``topslot contacts import``, as an operator
  does. Node ``k`` is ``topslot run`` with ``TOPSLOT_NODE_ID=node<k>``, its own var dir
  (``var<k>``: a machine's state directory, kept across restarts of the node) and its own JSON log
  (``node<k>.log``, appended to by each start), under ``setpriv --pdeathsig KILL`` where there is
  setpriv: a node never outlives the test process.
- The clocks: every node runs on a simulated clock at real speed (``--from``), so the slot can be
  a fixed instant of 2027. A node is started at a whole second ``s`` of the wall clock with
  ``--from s + offset``, the offset the same for every node of the cluster (fixed at the first
  start so that the bucket's dispatch start falls ``lead_in`` seconds later). So every node, one
  started late or restarted too, agrees on when the bucket is due, to within the spread of their
  start-up times: a clock starts once ``topslot run`` has loaded, 1.5-3.5 s after the spawn on the
  2-core test machine, so each runs that far behind the wall clock (``--from`` takes whole seconds:
  hence the spawn on a whole second). The same ``--from`` for every node would not do: each clock
  would start at its own process's start. ``clock_skew`` measures the lag of each node from its own
  log. Heartbeats and node deaths are judged by the wall clock, as in production.
- Reads as an operator would: rows per state and per node of their last lease owner, a node's log
  events, the SMTP server's accepted messages per delivery and per recipient (duplicates).
- ``close`` (always called by ``cluster``): every node still running is stopped (SIGCONT, then
  SIGTERM, then SIGKILL after ``stop_timeout``), before the SMTP server and the database go.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from dispatch.crash_support import (
    DIE_WITH_PARENT,
    NON_TERMINAL,
    CrashSetup,
    CrashSmtpServer,
    import_contacts,
    log_events,
    sim_time,
    tail,
    topslot,
    write_setup,
)
from topslot.planning.dispatch import DEFAULT_FLOOR
from topslot.store.db import open_engine
from topslot.store.schema import deliveries

DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)  # the campaign's slot
DB_PREFIX = "topslot_nodes_"


# ---------------------------------------------------------------- a database of its own


def _admin_url(url: str) -> str:
    """asyncpg's form of an SQLAlchemy ``postgresql+asyncpg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(_admin_url(url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_database(url: str, *, template: str | None = None) -> AsyncIterator[str]:
    """A new database ``topslot_nodes_<random>`` on the server of ``url`` (an SQLAlchemy asyncpg URL),
    empty or a copy of database ``template`` (which nobody may be connected to); its URL. Dropped on
    the way out, whatever happened, connections still open to it (a stopped node's) cut."""
    name = f"{DB_PREFIX}{secrets.token_hex(4)}"
    # names of our own making (no input in them): an identifier cannot be a bound parameter
    copy = f' TEMPLATE "{template}"' if template else ""
    await _admin(url, f'CREATE DATABASE "{name}"{copy}')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def databases(url: str, prefix: str = DB_PREFIX) -> set[str]:
    """The databases on the server of ``url`` whose name starts with ``prefix``."""
    conn = await asyncpg.connect(_admin_url(url))
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
    finally:
        await conn.close()
    return {r["datname"] for r in rows}


# ---------------------------------------------------------------- the nodes


@dataclass
class Node:
    """One start of node ``k`` (a restart is a new ``Node``, its log read from where it began)."""

    k: int
    proc: asyncio.subprocess.Process
    log: Path
    log_from: int  # the log's size when this start began: its events come after
    started_at: float  # wall clock (time.time()) of the spawn
    ready_s: float | None = None  # seconds from the spawn to daemon_ready, once waited for

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def events(self, name: str) -> list[dict[str, Any]]:
        """This start's JSON log records of event ``name``, in order."""
        return log_events(self.log, name, start=self.log_from)

    def tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)


@dataclass
class Cluster:
    """Nodes of one installation on one database (see the module). ``engine`` reads the ledger."""

    setup: CrashSetup
    url: str
    smtp_port: int
    contacts: int
    server: CrashSmtpServer | None = None  # the recording server (None: e.g. smtp-sink in bench/nodes.py)
    settings_env: dict[str, str] = field(default_factory=dict)  # TOPSLOT_* of every node
    nodes: dict[int, Node] = field(default_factory=dict)
    offset: timedelta | None = None  # simulated time - wall time, every node's
    engine: AsyncEngine | None = None

    @property
    def root(self) -> Path:
        return self.setup.root

    @property
    def due(self) -> datetime:
        return self.setup.due

    def env(self, **extra: str) -> dict[str, str]:
        return {"TOPSLOT_DATABASE_URL": self.url, **self.settings_env, **extra}

    async def _cli(self, *args: str) -> None:
        """``topslot ARGS`` (logged to ``cli.log``); it must succeed."""
        log = self.root / "cli.log"
        proc = await topslot(self.setup, *args, log=log, prefix=DIE_WITH_PARENT, **self.env())
        try:
            assert await proc.wait() == 0, f"topslot {' '.join(args)} failed\n{tail(log)}"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def prepare(self, *, seeded: bool = False) -> None:
        """Migrate the database once (``topslot db upgrade``) and import the contacts (``topslot
        contacts import``); ``seeded``: a copy of a database prepared so, nothing to do."""
        if not seeded:
            await self._cli("db", "upgrade")
            await import_contacts(self.setup, self.root / "cli.log", **self.env())
        self.engine = open_engine(self.url)

    # ------------------------------------------------------------ the clocks

    def schedule(self, lead_in: float) -> None:
        """Fix every node's clock so that the bucket's dispatch start (``DEFAULT_FLOOR`` before the
        slot: a fast bucket) falls ``lead_in`` wall-clock seconds from now (whole seconds)."""
        dispatch_start = self.due - DEFAULT_FLOOR
        self.offset = dispatch_start - _whole_second(time.time() + lead_in)

    @property
    def bucket_at(self) -> float:
        """The bucket's dispatch start in wall-clock time (``time.time()``)."""
        assert self.offset is not None, "no node started yet"
        return (self.due - DEFAULT_FLOOR - self.offset).timestamp()

    def clock_skew(self) -> dict[int, float]:
        """How far behind each node's clock ran, in seconds (its ``bucket_started``: the simulated
        instant it fired at, against the wall-clock timestamp of that log line), for the nodes that
        fired the bucket."""
        assert self.offset is not None
        skew = {}
        for k, node in self.nodes.items():
            if started := node.events("bucket_started"):
                e = started[0]
                simulated = self.due - DEFAULT_FLOOR + timedelta(seconds=e["lateness_s"])
                wall = datetime.fromisoformat(e["timestamp"])
                skew[k] = round((wall + self.offset - simulated).total_seconds(), 3)
        return skew

    # ------------------------------------------------------------ starting and stopping

    async def start(self, k: int, *, ready_timeout: float | None = 120.0, lead_in: float = 20.0, **env: str) -> Node:
        """Start node ``k`` (again, if it ran before) at the next whole wall-clock second, on the
        cluster's clock (``schedule(lead_in)`` first if nothing fixed it yet); ``env``: more
        ``TOPSLOT_*`` for this node. With ``ready_timeout``, wait for its ``daemon_ready`` (it has
        planned the campaign)."""
        assert k not in self.nodes or not self.nodes[k].running, f"node{k} is running"
        if self.offset is None:
            self.schedule(lead_in)
        assert self.offset is not None
        await asyncio.sleep(-time.time() % 1.0)
        at = _whole_second(time.time())
        log = self.root / f"node{k}.log"
        log_from = log.stat().st_size if log.exists() else 0
        proc = await topslot(
            self.setup, "run", "--from", sim_time(at + self.offset), log=log, prefix=DIE_WITH_PARENT,
            **self.env(TOPSLOT_NODE_ID=f"node{k}", TOPSLOT_VAR_DIR=str(self.root / f"var{k}"), **env),
        )  # fmt: skip
        node = self.nodes[k] = Node(k, proc, log, log_from, started_at=time.time())
        if ready_timeout is not None:
            await self.wait_event(k, "daemon_ready", ready_timeout)
            node.ready_s = time.time() - node.started_at
        return node

    async def start_all(self, count: int, *, lead_in: float, ready_timeout: float = 120.0) -> float:
        """Start nodes 0 … ``count - 1``, each once the one before is ready (so their start-up plans
        do not overlap); the bucket's dispatch start ``lead_in`` seconds after the first start.
        Returns the seconds left until it once all are ready (negative: it fired before)."""
        for k in range(count):
            await self.start(k, ready_timeout=ready_timeout, lead_in=lead_in)
        return self.bucket_at - time.time()

    def pid(self, k: int) -> int:
        return self.nodes[k].pid

    def kill(self, k: int, sig: signal.Signals) -> None:
        """Send ``sig`` to node ``k`` (SIGKILL, SIGSTOP, SIGCONT, SIGTERM …)."""
        node = self.nodes[k]
        assert node.running, f"node{k} has exited ({node.proc.returncode})"
        os.kill(node.pid, sig)

    async def stop(self, k: int, timeout: float = 30.0) -> int:
        """Stop node ``k`` as systemd does: SIGCONT (in case it is stopped), SIGTERM, and SIGKILL if it
        has not exited within ``timeout``; its exit code (negative: the signal that ended it)."""
        proc = self.nodes[k].proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode

    async def close(self, stop_timeout: float = 30.0) -> None:
        """Stop every node still running (all at once), then close the ledger's engine."""
        try:
            stopped = await asyncio.gather(*(self.stop(k, stop_timeout) for k in self.nodes), return_exceptions=True)
            for outcome in stopped:
                if isinstance(outcome, BaseException):
                    raise outcome
        finally:
            if self.engine is not None:
                await self.engine.dispose()

    # ------------------------------------------------------------ waiting

    async def wait_event(self, k: int, name: str, timeout: float) -> dict[str, Any]:
        """The first ``name`` event in node ``k``'s log (this start), waited for; fails with the log's
        tail if the node exits first or ``timeout`` seconds pass."""
        node = self.nodes[k]
        deadline = time.monotonic() + timeout
        while True:
            running = node.running  # before reading the log: an event logged just before the exit counts
            if found := node.events(name):
                return found[0]
            if not running:
                raise AssertionError(f"node{k} exited ({node.proc.returncode}) before {name}\n{node.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} from node{k} within {timeout} s\n{node.tail()}")
            await asyncio.sleep(0.1)

    async def first_event_among(self, ks: Iterable[int], name: str, timeout: float) -> tuple[int, dict[str, Any]]:
        """The first ``name`` event logged by any of nodes ``ks``, and which node logged it."""
        ks = list(ks)
        deadline = time.monotonic() + timeout
        while True:
            found = [(e["timestamp"], k, e) for k in ks for e in self.nodes[k].events(name)]
            if found:
                _, k, event = min(found, key=lambda f: f[0])
                return k, event
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} within {timeout} s\n{self.tails(ks)}")
            await asyncio.sleep(0.1)

    async def until_settled(self, timeout: float) -> Counter[str]:
        """Wait until the ledger holds a row per contact and none is planned, claimed, sending or
        waiting for a retry; the rows per state then. Fails if every node has exited first."""
        deadline = time.monotonic() + timeout
        while True:
            states = await self.states()
            if sum(states.values()) == self.contacts and not any(states[s] for s in NON_TERMINAL):
                return states
            if not any(n.running for n in self.nodes.values()):
                raise AssertionError(f"every node exited, rows unsettled: {dict(states)}\n{self.tails()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled within {timeout} s: {dict(states)}\n{self.tails()}")
            await asyncio.sleep(0.25)

    def tails(self, ks: Iterable[int] | None = None, lines: int = 15) -> str:
        return "\n".join(f"--- node{k}\n{self.nodes[k].tail(lines)}" for k in (self.nodes if ks is None else ks))

    # ------------------------------------------------------------ the ledger

    async def states(self) -> Counter[str]:
        """Rows per state."""
        query = select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
        return Counter({state: n for state, n in await self._all(query)})

    async def by_node(self) -> dict[str | None, Counter[str]]:
        """Rows per state, per node of their last lease owner (``node<k>``; None: never claimed)."""
        node = func.split_part(deliveries.c.lease_owner, "/", 1)
        query = select(node, deliveries.c.state, func.count()).group_by(node, deliveries.c.state)
        found: dict[str | None, Counter[str]] = {}
        for owner, state, n in await self._all(query):
            found.setdefault(owner, Counter())[state] = n
        return found

    async def rows(self) -> dict[int, tuple[str, str | None]]:
        """Delivery id → (state, node of its last lease owner)."""
        node = func.split_part(deliveries.c.lease_owner, "/", 1)
        return {i: (s, o) for i, s, o in await self._all(select(deliveries.c.id, deliveries.c.state, node))}

    async def _all(self, query: Any) -> list[Any]:
        assert self.engine is not None, "prepare() first"
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    # ------------------------------------------------------------ the SMTP server

    def accepted_per_delivery(self) -> Counter[int]:
        """Delivery id (its Message-ID) → messages accepted (250 after the final dot) that carried it."""
        assert self.server is not None, "no recording SMTP server"
        return self.server.received_ids(accepted_only=True)

    def accepted_per_recipient(self) -> Counter[str]:
        """Recipient address → messages accepted for it."""
        assert self.server is not None, "no recording SMTP server"
        return Counter(rcpt for message in self.server.accepted() for rcpt in message.rcpt_to)

    def duplicates(self) -> dict[int, int]:
        """Deliveries the server accepted more than once, with how many times."""
        return {d: n for d, n in self.accepted_per_delivery().items() if n > 1}


def _whole_second(wall: float) -> datetime:
    return datetime.fromtimestamp(round(wall), UTC)


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, url: str, *, contacts: int, rate: float, due: datetime = DUE, accept_delay: float = 0.0,
    smtp_port: int | None = None, template: str | None = None, **env: str,
) -> AsyncIterator[Cluster]:  # fmt: skip
    """A fresh database (a copy of ``template`` when given: migrated and imported already), a
    recording SMTP server (or the one listening on ``smtp_port``), the config (``rate`` the SMTP
    server's ``rate_per_second``, ``env`` more ``TOPSLOT_*`` for every node) and ``contacts``
    contacts. The nodes the caller starts are all stopped on the way out, then the server and the
    database go, whatever happened."""
    async with contextlib.AsyncExitStack() as stack:
        db_url = await stack.enter_async_context(pg_database(url, template=template))
        server = None
        if smtp_port is None:
            server = await stack.enter_async_context(CrashSmtpServer(accept_delay=accept_delay))
            smtp_port = server.port
        setup = write_setup(tmp_path, smtp_port, due, contacts=contacts, big_index=-1, rate=rate)
        nodes = Cluster(setup, db_url, smtp_port, contacts, server, settings_env=dict(env))
        stack.push_async_callback(nodes.close)
        await nodes.prepare(seeded=template is not None)
        yield nodes
