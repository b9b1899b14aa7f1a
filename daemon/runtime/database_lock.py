"""SQLite stays single-node: one daemon per SQLite database file.

``hold_database`` takes an exclusive ``flock`` on ``<database file>.lock`` for the daemon's life
(``topslot run``, ``topslot demo``) and writes who holds it into the file: pid, host and start time.
A second daemon on the same file fails at start-up with ``DatabaseInUse``, one line naming the
first. The kernel releases the lock when its process ends, whatever the end (SIGKILL included), so
a lock file left behind never blocks a start; the file itself stays (removing it could let two
daemons lock two different files).

Only daemons take it: the CLI commands (``report``, ``status``, imports, ``plan`` ...) use the file
beside a daemon freely, and a daemon's dispatch helper processes are its own (started without the
lock's descriptor). PostgreSQL (several nodes by design) and in-memory SQLite have nothing to lock.
Within one process the lock is re-entrant: ``topslot demo`` holds it before it clears its directory,
then starts its daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from topslot.errors import TopslotError
from topslot.store.db import sqlite_file

LOCK_SUFFIX = ".lock"
READ_TRIES = 20  # a holder writes who it is right after it takes the lock: a start racing it waits ≤ 1 s
READ_PAUSE = 0.05

_HELD: dict[str, list[int]] = {}  # lock file (real path) → [descriptor, holders in this process]


class DatabaseInUse(TopslotError):
    """Another process holds the daemon lock of this SQLite database (one line naming it)."""


def lock_path(database: Path) -> Path:
    """The lock file of a SQLite database file."""
    return database.with_name(database.name + LOCK_SUFFIX)


@contextlib.contextmanager
def hold_database(database_url: str) -> Iterator[Path | None]:
    """Hold the daemon lock of the SQLite database ``database_url`` names for the block; yields the
    lock file (None: PostgreSQL or in-memory, nothing held). ``DatabaseInUse`` if another process
    holds it; an ``OSError`` if the lock file cannot be created (its directory is read-only)."""
    database = sqlite_file(database_url)
    if database is None:
        yield None
        return
    path = lock_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    if key in _HELD:  # this process holds it already
        _HELD[key][1] += 1
        try:
            yield path
        finally:
            _release(key)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatabaseInUse(_in_use(database, _holder(path))) from None
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = [fd, 1]
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield path
    finally:
        _release(key)


def _release(key: str) -> None:
    held = _HELD[key]
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        os.close(held[0])  # the lock goes with the last descriptor of the open file


def _holder(path: Path) -> dict[str, Any]:
    """Who holds the lock, as it wrote into the file (``{}`` if it never does)."""
    for attempt in range(READ_TRIES):
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if isinstance(found, dict) and found.get("pid"):
            return found
        if attempt + 1 < READ_TRIES:
            time.sleep(READ_PAUSE)
    return {}


def _in_use(database: Path, holder: dict[str, Any]) -> str:
    since = holder.get("since")
    try:
        since = datetime.fromisoformat(str(since)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        since = "an unknown time"
    who = f"pid {holder.get('pid', 'unknown')} on {holder.get('host', 'an unknown host')}, since {since}"
    return (
        f"another topslot daemon ({who}) is running on the SQLite database {database}; one SQLite "
        "database has one daemon: stop that one first, or run several nodes on PostgreSQL (database_url)"
    )
