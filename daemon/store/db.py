"""Opening engines and applying migrations.

``open_engine`` gives an ``AsyncEngine`` for SQLite (aiosqlite; WAL, busy timeout, foreign keys,
synchronous=FULL, SQLAlchemy-controlled transactions) or PostgreSQL (asyncpg). ``upgrade``
applies the Alembic migrations shipped in ``daemon/store/migrations`` programmatically.

``prepare_database`` is how commands and the daemon open the database: migrated (created if need
be), or with ``read_only`` only if it already exists at the current schema. What goes wrong on the
way is a ``DatabaseUnavailable`` whose message is one line naming the database (never its password)
and the setting; ``database_problem`` turns any exception raised by database code into that line.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.util.concurrency import await_

from topslot.errors import TopslotError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
# 4 MiB page cache per connection (SQLite's default: 2 MiB). A process holds several connections,
# and with a million ledger rows each of their caches fills up: 16 MiB each made a 1,000,000-recipient
# send peak at 170 MB against 139 MB with 4 MiB, and planning a million 158 MB against 141 MB, with no
# loss of speed measured (plan 33.6 s against 35.3-35.5 s, email CPU per message 391-455 µs against
# 476-497 µs, imports 14.6-18.4 s against 16.1-18.1 s; docs/pipeline.md).
SQLITE_CACHE_KIB = -4_096
# FULL (2): every commit is on disk before it returns, so a ``sending`` mark survives a power loss
# and its row is never sent twice. NORMAL (1) in WAL mode may lose the last commits to a power loss
# (not to a crash of topslot). The cost, measured side by side: docs/pipeline.md ("Durability").
SQLITE_SYNCHRONOUS = 2
# The tracking writer's connection (``sync_sqlite_engine``) inserts batches of events into indexes
# too big for its page cache (a leaf page of the events' delivery index per hit). Measured with the
# writer alone on batches shaped like ``bench/tracking_load.py``'s (300,000 events stored): 13
# system calls a hit, 4.5 of them reads of pages the cache had no room for and 3 writes of a
# statement journal (a multi-row INSERT journals the pages it changes, in case it must be undone
# alone). ``mmap_size`` reads the file through a memory map instead (a page the cache misses costs a
# memory access, not a ``pread``); ``temp_store=MEMORY`` keeps statement journals in memory (a
# batch's: a few MB at most). 5.5 calls a hit, and 48 -> 40 µs of CPU a hit (medians of 3 runs).
SQLITE_BATCH_WRITER_PRAGMAS = ("mmap_size=1073741824", "temp_store=MEMORY")
# Execution option: ``engine.execution_options(sqlite_begin="IMMEDIATE")`` makes a SQLite writer
# take the write lock at BEGIN (avoids "database is locked" on lock upgrade). Ignored elsewhere.
BEGIN_OPTION = "sqlite_begin"
IMMEDIATE = {BEGIN_OPTION: "IMMEDIATE"}
# Serialises concurrent ``upgrade`` calls from several nodes on PostgreSQL.
_PG_MIGRATION_LOCK = 0x7470_736C_6F74  # "topslot"


def normalise_url(url: str | URL) -> URL:
    """Fill in the async driver: ``sqlite:///x`` → aiosqlite, ``postgresql://`` → asyncpg."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.get_driver_name() != "aiosqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.get_backend_name() == "postgresql" and u.get_driver_name() != "asyncpg":
        u = u.set(drivername="postgresql+asyncpg")
    return u


# How each engine of ``open_engine`` was opened (URL, schema, options), for ``reopen``.
_OPENED: weakref.WeakKeyDictionary[Any, tuple[URL, str | None, dict[str, Any]]] = weakref.WeakKeyDictionary()


def open_engine(
    url: str | URL, *, schema: str | None = None, idle_in_transaction_s: float | None = None, **kwargs: Any
) -> AsyncEngine:
    """An engine for ``url``; ``schema`` sets PostgreSQL's search_path (isolated test schemas).

    ``idle_in_transaction_s`` (PostgreSQL): the server ends a session of this engine that sits in
    an open transaction this long, releasing its row locks. A daemon sets it to its node timeout:
    a node stopped in the middle of a transaction (SIGSTOP, a frozen VM) would otherwise hold the
    locks on its rows, and the node taking them back would wait for it as long as it is stopped.
    (topslot's transactions are short: one statement, or one chunk's.)"""
    u = normalise_url(url)
    options = dict(kwargs, idle_in_transaction_s=idle_in_transaction_s)
    kwargs.setdefault("json_deserializer", json_value)
    if u.get_backend_name() == "sqlite":
        engine = _sqlite_engine(u, **kwargs)
    elif u.get_backend_name() == "postgresql":
        connect_args = dict(kwargs.pop("connect_args", {}))
        settings = dict(connect_args.get("server_settings", {}))
        if schema:
            settings["search_path"] = schema
        if idle_in_transaction_s is not None:
            settings["idle_in_transaction_session_timeout"] = str(max(1, round(idle_in_transaction_s * 1000)))
        if settings:
            connect_args["server_settings"] = settings
        engine = create_async_engine(u, connect_args=connect_args, pool_pre_ping=True, **kwargs)
    else:
        raise ValueError(f"unsupported database URL {u.render_as_string(hide_password=True)}: use sqlite or postgresql")
    _OPENED[engine.sync_engine] = (u, schema, options)
    return engine


def json_value(text: str) -> Any:
    """A JSON column's value read back (contacts' ``im_ids`` and ``attributes``, per recipient sent):
    by orjson, ~7× ``json.loads``, the same value; by ``json.loads`` what orjson reads otherwise or
    not at all (``json.dumps`` writes both): ``NaN``, and integers of 19 digits or more, which orjson
    may read as floats (a text with such a run of digits anywhere goes to ``json.loads``)."""
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


_LONG_DIGITS = re.compile(r"[0-9]{19}")


def is_in_memory(engine: AsyncEngine) -> bool:
    """An in-memory SQLite database: only this engine's one connection sees it."""
    u = engine.url
    return u.get_backend_name() == "sqlite" and _in_memory(u.database or "")


def _in_memory(database: str) -> bool:
    return database in ("", ":memory:") or database.startswith("file::memory:") or "mode=memory" in database


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite database URL, as the engine opens it (``~`` expanded, relative to the
    working directory); None for PostgreSQL and for an in-memory SQLite database."""
    u = normalise_url(url)
    database = u.database or ""
    if u.get_backend_name() != "sqlite" or _in_memory(database):
        return None
    return Path(database).expanduser()


@dataclass(frozen=True)
class EngineSpec:
    """How an engine was opened (``open_engine``'s arguments), picklable: another process opens the
    same database the same way (``spec.open()``). The URL keeps its password: never log a spec."""

    url: str
    schema: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def open(self, **overrides: Any) -> AsyncEngine:
        return open_engine(self.url, schema=self.schema, **{**self.options, **overrides})


def engine_spec(engine: AsyncEngine) -> EngineSpec:
    """How ``engine`` was opened (an engine not made by ``open_engine``: its URL alone). Not for an
    in-memory SQLite database (``is_in_memory``): another process would see another one."""
    if is_in_memory(engine):
        raise ValueError("an in-memory SQLite database cannot be opened twice")
    opened = _OPENED.get(engine.sync_engine)
    if opened is None:
        return EngineSpec(engine.url.render_as_string(hide_password=False))
    url, schema, options = opened
    return EngineSpec(url.render_as_string(hide_password=False), schema, dict(options))


def reopen(engine: AsyncEngine, **overrides: Any) -> AsyncEngine:
    """A new engine to the same database as ``engine``, opened the same way (schema, pragmas, options,
    ``overrides`` on top), for another event loop (a connection belongs to the loop that opened it).
    Not for an in-memory SQLite database (``is_in_memory``): a second engine would see another one."""
    return engine_spec(engine).open(**overrides)


def _sqlite_engine(u: URL, **kwargs: Any) -> AsyncEngine:
    database = u.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.setdefault("poolclass", StaticPool)  # one shared connection, or each sees its own DB
    engine = create_async_engine(u, **kwargs)
    _sqlite_listeners(engine.sync_engine, in_memory=in_memory)
    return engine


def sync_sqlite_engine(engine: AsyncEngine) -> Engine:
    """A blocking engine (the ``sqlite3`` module itself, no aiosqlite thread) to the SQLite database
    file of ``engine``, opened the same way (pragmas, ``sqlite_begin``), for a thread of its own that
    runs statements one after the other: each statement is a call into SQLite on that thread, not a
    trip to aiosqlite's thread and back through an event loop (two hand-overs of the interpreter
    lock, each a wait of up to ``sys.getswitchinterval()`` while another thread runs Python).
    Its connections also take ``SQLITE_BATCH_WRITER_PRAGMAS``: it is the tracking writer's engine
    (``topslot.tracking.flusher``), whose statements are bounded batches.
    Not for an in-memory database or PostgreSQL."""
    u = engine.url
    if u.get_backend_name() != "sqlite" or is_in_memory(engine):
        raise ValueError("a blocking engine is made for a SQLite database file only")
    sync = create_engine(u.set(drivername="sqlite+pysqlite"), json_deserializer=json_value)
    _sqlite_listeners(sync, in_memory=False, extra=SQLITE_BATCH_WRITER_PRAGMAS)
    return sync


def _sqlite_listeners(sync_engine: Engine, *, in_memory: bool, extra: tuple[str, ...] = ()) -> None:
    """topslot's pragmas (and the ``extra`` ones) on every new SQLite connection, and BEGIN as
    ``sqlite_begin`` says."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS:d}")
        cursor.execute(f"PRAGMA cache_size={SQLITE_CACHE_KIB:d}")  # negative: KiB
        for pragma in extra:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"{BEGIN_OPTION} must be DEFERRED, IMMEDIATE or EXCLUSIVE, not {mode!r}")
        # One trip to aiosqlite's thread (its connection's own execute) instead of three (a statement
        # through SQLAlchemy's adapter opens a cursor, executes, closes it): a send commits two
        # transactions per chunk. If it fails, BEGIN the ordinary way, which raises SQLAlchemy's
        # wrapped error (what ``is_transient`` classifies) if the database still refuses.
        driver = conn.connection.driver_connection
        if driver is not None and hasattr(driver, "_conn"):  # aiosqlite's Connection
            try:
                await_(driver.execute(f"BEGIN {mode}"))
                return
            except Exception:  # noqa: BLE001 - the ordinary BEGIN below reports it
                pass
        conn.exec_driver_sql(f"BEGIN {mode}")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code (no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def upgrade(target: str | URL | AsyncEngine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (idempotent: already there → nothing happens)."""
    engine = target if isinstance(target, AsyncEngine) else open_engine(target)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            await conn.run_sync(_upgrade_sync, revision)
    finally:
        if engine is not target:
            await engine.dispose()


def _upgrade_sync(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


# ---------------------------------------------------------------- opening it for a command, clear failures

URL_SETTING = "setting database_url / TOPSLOT_DATABASE_URL"
UPGRADE_HINT = "run topslot db upgrade"
# Modules whose frames in a traceback mean "raised while using the database".
_DATABASE_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "alembic", __name__)
_NETWORK_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ETIMEDOUT: "connection timed out",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset",
}


class DatabaseUnavailable(TopslotError):
    """The database cannot be used as asked: unreachable, cannot be opened, missing (read-only use), or
    not at this topslot's schema. The message is one line: the database (no password), why, and what
    to do or which setting to check."""


def display_url(url: str | URL) -> str:
    """``url`` safe to print: the password, and any query parameter naming a password or secret, as ``***``."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return "(a database URL that cannot be parsed)"
    hidden = {k: "***" for k in u.query if "password" in k.lower() or "secret" in k.lower()}
    if hidden:
        u = u.update_query_dict(hidden)
    return u.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")  # the query part is escaped


def sqlite_database_file(url: str | URL) -> Path | None:
    """The file of an on-disk SQLite URL; None for PostgreSQL, in-memory and ``file:`` URI databases."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return None
    database = u.database or ""
    if u.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def describe_database(url: str | URL) -> str:
    """How messages name the database: ``database file /path`` for SQLite, else the URL without password."""
    path = sqlite_database_file(url)
    return f"database file {path}" if path is not None else f"database {display_url(url)}"


def database_problem(exc: BaseException, url: str | URL) -> str | None:
    """One line for a failure of the database at ``url`` (unreachable, cannot be opened or used), naming
    the database and the setting, never the password; None when ``exc`` was not raised by database code
    (a port in use, a bug elsewhere), so that callers can report those their own way."""
    if isinstance(exc, DatabaseUnavailable):
        return str(exc)
    if not isinstance(exc, OSError | DBAPIError | ArgumentError) or not _raised_by_database_code(exc):
        return None
    path = sqlite_database_file(url)
    if path is not None:
        if isinstance(exc, OSError) or "unable to open" in str(getattr(exc, "orig", exc)):
            return f"database file {path} cannot be opened: {_sqlite_reason(path, exc)} ({URL_SETTING})"
        return f"database file {path} cannot be used: {_first_line(getattr(exc, 'orig', exc))} ({URL_SETTING})"
    if isinstance(exc, OSError):
        return f"database {display_url(url)} is unreachable: {_network_reason(exc, url)} ({URL_SETTING})"
    return f"database {display_url(url)} cannot be used: {_first_line(getattr(exc, 'orig', exc))} ({URL_SETTING})"


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be used *for now* (and the same statement may work
    in seconds): SQLite's disk full, lock timeout or I/O error; a PostgreSQL connection dropped,
    refused or reset, or a server shutting down, starting or out of resources. Integrity and
    programming errors are not: retrying them repeats a bug."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        if isinstance(exc, IntegrityError | ProgrammingError | DataError):
            return False
        return _transient_cause(exc.orig)
    return isinstance(exc, OSError | TimeoutError) or _transient_cause(exc)


_PG_TRANSIENT_CLASSES = ("08", "53", "57P", "58")  # connection, resources, operator intervention, system


def _transient_cause(exc: BaseException | None) -> bool:
    """asyncpg's own errors (SQLAlchemy may wrap them as a plain ``DBAPIError``) by SQLSTATE."""
    if exc is None:
        return False
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return isinstance(state, str) and state.startswith(_PG_TRANSIENT_CLASSES)


def require_database_file(url: str | URL) -> None:
    """For read-only use: ``DatabaseUnavailable`` when an SQLite database file does not exist (nothing
    is created, not even its directory). Other databases pass (their server says if they exist)."""
    path = sqlite_database_file(url)
    if path is None or path.is_file():
        return
    if path.is_dir():
        raise DatabaseUnavailable(f"database file {path} is a directory, not a file ({URL_SETTING})")
    missing = "" if path.parent.is_dir() else f" (nor does its directory {path.parent})"
    raise DatabaseUnavailable(
        f"database file {path} does not exist{missing} ({URL_SETTING}); topslot db upgrade creates it"
    )


def head_revision() -> str | None:
    """The schema revision this topslot's migrations end at."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def check_schema(engine: AsyncEngine, url: str | URL) -> None:
    """``DatabaseUnavailable`` unless the database is at this topslot's schema revision (nothing is migrated)."""
    current, head = await current_revision(engine), head_revision()
    if current == head:
        return
    what = describe_database(url)
    if current is None:
        raise DatabaseUnavailable(f"{what} has no topslot tables: {UPGRADE_HINT} (or check {URL_SETTING})")
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(current)
    except CommandError:  # "Can't locate revision"
        raise DatabaseUnavailable(
            f"{what} has schema revision {current}, which this topslot does not know (written by a newer "
            f"topslot?): upgrade topslot, or check {URL_SETTING}"
        ) from None
    raise DatabaseUnavailable(f"{what} has schema revision {current}, older than this topslot's {head}: {UPGRADE_HINT}")


async def prepare_database(
    url: str, *, read_only: bool = False, idle_in_transaction_s: float | None = None
) -> AsyncEngine:
    """An engine for ``url``, ready for use; the caller disposes of it.

    By default the database is created if need be (SQLite: the file and its directory) and migrated.
    With ``read_only`` it must already exist at the current schema: nothing is created or migrated.
    Raises ``DatabaseUnavailable`` (one line, see ``database_problem``) when the database cannot be
    used; other exceptions (bugs) propagate unchanged. ``idle_in_transaction_s``: see ``open_engine``."""
    engine: AsyncEngine | None = None
    try:
        if read_only:
            require_database_file(url)
        engine = open_engine(url, idle_in_transaction_s=idle_in_transaction_s)
        if read_only:
            await check_schema(engine, url)
        else:
            await upgrade(engine)
    except BaseException as exc:
        if engine is not None:
            await engine.dispose()
        problem = database_problem(exc, url) if isinstance(exc, Exception) else None
        if problem is None or isinstance(exc, DatabaseUnavailable):
            raise
        raise DatabaseUnavailable(problem) from exc
    return engine


def _raised_by_database_code(exc: BaseException) -> bool:
    """Whether the traceback of ``exc`` (or of an exception it was raised from) passes through the
    database drivers, SQLAlchemy, Alembic or this module."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb: TracebackType | None = current.__traceback__
        while tb is not None:
            module = str(tb.tb_frame.f_globals.get("__name__", ""))
            if module == __name__ or module.split(".")[0] in _DATABASE_MODULES:
                return True
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return False


def _network_reason(exc: OSError, url: str | URL) -> str:
    """Why a database server could not be reached, in a few words."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name {make_url(url).host!r}"
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    # Several addresses tried (localhost: ::1 and 127.0.0.1) → "Multiple exceptions: [Errno 111] ..., ..."
    codes = {exc.errno} if exc.errno else {int(n) for n in re.findall(r"\[Errno (\d+)\]", str(exc))}
    if len(codes) == 1 and (reason := _NETWORK_REASONS.get(codes.pop())):
        return reason
    return _first_line(exc.strerror or exc)


def _sqlite_reason(path: Path, exc: BaseException) -> str:
    """Why an SQLite file cannot be opened, found by looking at the path itself."""
    if path.is_dir():
        return "it is a directory"
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is not a directory"
    if existing is not None and not path.exists() and not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{path} is not readable and writable"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return _first_line(getattr(exc, "orig", exc))


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
