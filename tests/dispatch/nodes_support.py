"""Several real ``topslot run`` nodes on one PostgreSQL database, sending one campaign's bucket to
one real SMTP server on 127.0.0.1: the scale-out tests (``test_nodes.py``) and ``bench/nodes.py``.

- ``pg_database``: a fresh database per test (``CREATE DATABASE`` on the server of
  ``TOPSLOT_TEST_DATABASE_URL``), dropped afterwards whatever happens.
- ``Cluster``: the config (``crash_support``'s campaign, one slot, no big message), the contacts
  imported by ``topslot contacts import``, and node processes each with its own ``var_dir``,
  ``TOPSLOT_NODE_ID=node<k>`` and JSON log. Every node runs on a simulated clock at real speed
  whose start is shifted by the real time elapsed since the first node started, so all of them
  agree on when the bucket is due (to within a second: ``--from`` takes whole seconds).
- Reads as an operator would: rows per state and per lease owner, the SMTP server's count per
  delivery id (``CrashSmtpServer.received_ids``), a node's log events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from dispatch.crash_support import (
    CrashSetup,
    CrashSmtpServer,
    import_contacts,
    log_events,
    sim_time,
    tail,
    topslot,
    write_setup,
)
from topslot.store.db import open_engine
from topslot.store.schema import deliveries

LEAD = timedelta(seconds=60)  # a fast bucket starts one minute before its slot (planning.dispatch's floor)


@contextlib.asynccontextmanager
async def pg_database(url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of ``url`` (an SQLAlchemy asyncpg URL); its URL."""
    base = make_url(url)
    name = f"topslot_nodes_{secrets.token_hex(4)}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # a name of our own making: no input in it
    finally:
        await conn.close()
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@dataclass
class Node:
    k: int
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str) -> list[dict[str, Any]]:
        return log_events(self.log, name)


@dataclass
class Cluster:
    """Nodes of one installation; ``close`` stops every node still running (SIGTERM, then SIGKILL)."""

    setup: CrashSetup
    url: str
    server: CrashSmtpServer
    contacts: int
    settings_env: dict[str, str] = field(default_factory=dict)
    nodes: dict[int, Node] = field(default_factory=dict)
    engine: AsyncEngine | None = None
    _t0: float | None = None

    @property
    def due(self) -> datetime:
        return self.setup.due

    async def prepare(self) -> None:
        """Migrate the database and import the contacts (``topslot contacts import``)."""
        self.engine = open_engine(self.url)
        await import_contacts(self.setup, self.setup.root / "import.log", **self.env())

    def env(self, **extra: str) -> dict[str, str]:
        return {"TOPSLOT_DATABASE_URL": self.url, **self.settings_env, **extra}

    async def start(self, k: int, *, lead_in: float = 8.0) -> Node:
        """Start node ``k``. The first node's clock starts ``LEAD + lead_in`` seconds before the
        slot (so the bucket starts ``lead_in`` seconds after it); later nodes' clocks start as far on
        as real time went meanwhile."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        start = self.due - LEAD - timedelta(seconds=lead_in) + timedelta(seconds=now - self._t0)
        root = self.setup.root
        log = root / f"node{k}.log"
        proc = await topslot(
            self.setup, "run", "--from", sim_time(start), log=log,
            **self.env(TOPSLOT_NODE_ID=f"node{k}", TOPSLOT_VAR_DIR=str(root / f"var{k}")),
        )  # fmt: skip
        node = Node(k, proc, log)
        self.nodes[k] = node
        return node

    def signal(self, k: int, sig: signal.Signals) -> None:
        os.kill(self.nodes[k].pid, sig)

    async def wait_event(self, k: int, name: str, timeout: float) -> dict[str, Any]:
        """The first ``name`` event in node ``k``'s log, waited for; fails with the log's tail."""
        node = self.nodes[k]
        deadline = time.monotonic() + timeout
        while not (found := node.events(name)):
            if node.proc.returncode is not None and not node.events(name):
                raise AssertionError(f"node{k} exited ({node.proc.returncode}) before {name}\n{tail(node.log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} from node{k} within {timeout} s\n{tail(node.log)}")
            await asyncio.sleep(0.1)
        return found[0]

    async def first_event_among(self, ks: list[int], name: str, timeout: float) -> dict[str, Any]:
        """The first ``name`` event logged by any of nodes ``ks``, waited for."""
        deadline = time.monotonic() + timeout
        while not (found := [e for k in ks for e in self.nodes[k].events(name)]):
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- node{k}\n{tail(self.nodes[k].log, 15)}" for k in ks)
                raise AssertionError(f"no {name} within {timeout} s\n{logs}")
            await asyncio.sleep(0.1)
        return found[0]

    async def rows_of(self, node: str) -> Counter[str]:
        """Rows per state whose last lease owner is a process of ``node``."""
        assert self.engine is not None
        query = (
            select(deliveries.c.state, func.count())
            .where(deliveries.c.lease_owner.startswith(f"{node}/"))
            .group_by(deliveries.c.state)
        )
        async with self.engine.connect() as conn:
            return Counter(dict((await conn.execute(query)).all()))  # type: ignore[arg-type]

    async def states(self) -> Counter[str]:
        assert self.engine is not None
        query = select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
        async with self.engine.connect() as conn:
            return Counter(dict((await conn.execute(query)).all()))  # type: ignore[arg-type]

    async def rows(self) -> dict[int, tuple[str, str | None]]:
        """Delivery id → (state, the node of its last lease owner)."""
        assert self.engine is not None
        query = select(deliveries.c.id, deliveries.c.state, deliveries.c.lease_owner)
        async with self.engine.connect() as conn:
            return {i: (s, o.split("/")[0] if o else None) for i, s, o in (await conn.execute(query)).all()}

    async def until_settled(self, timeout: float) -> Counter[str]:
        """Wait until no row is planned, claimed, sending or waiting for a retry; the states then."""
        deadline = time.monotonic() + timeout
        while True:
            states = await self.states()
            if sum(states.values()) == self.contacts and not any(
                states[s] for s in ("planned", "claimed", "sending", "retry_wait")
            ):
                return states
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- node{k}\n{tail(n.log, 15)}" for k, n in self.nodes.items())
                raise AssertionError(f"not settled within {timeout} s: {dict(states)}\n{logs}")
            await asyncio.sleep(0.25)

    async def stop(self, k: int, timeout: float = 30.0) -> int:
        """SIGTERM node ``k`` (SIGCONT first, in case it is stopped); its exit code."""
        proc = self.nodes[k].proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode

    async def close(self) -> None:
        for k in list(self.nodes):
            await self.stop(k)
        if self.engine is not None:
            await self.engine.dispose()


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, url: str, due: datetime, *, contacts: int, rate: float, accept_delay: float = 0.0, **env: str
) -> AsyncIterator[Cluster]:
    """A fresh database, a real SMTP server, the config and the contacts; the nodes started by the
    caller (``Cluster.start``) are all stopped on the way out."""
    async with pg_database(url) as db_url, CrashSmtpServer(accept_delay=accept_delay) as server:
        setup = write_setup(tmp_path, server.port, due, contacts=contacts, big_index=-1, rate=rate)
        nodes = Cluster(setup, db_url, server, contacts, settings_env=dict(env))
        try:
            await nodes.prepare()
            yield nodes
        finally:
            await nodes.close()
