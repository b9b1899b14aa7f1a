"""Opening engines and applying migrations.

``open_engine`` gives an ``AsyncEngine`` for SQLite (aiosqlite; WAL, busy timeout, foreign keys,
synchronous=NORMAL, SQLAlchemy-controlled transactions) or PostgreSQL (asyncpg). ``upgrade``
applies the Alembic migrations shipped in ``daemon/store/migrations`` programmatically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = -16_384  # 16 MiB page cache per connection (SQLite default: 2 MiB)
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


def open_engine(url: str | URL, *, schema: str | None = None, **kwargs: Any) -> AsyncEngine:
    """An engine for ``url``; ``schema`` sets PostgreSQL's search_path (isolated test schemas)."""
    u = normalise_url(url)
    if u.get_backend_name() == "sqlite":
        return _sqlite_engine(u, **kwargs)
    if u.get_backend_name() == "postgresql":
        connect_args = dict(kwargs.pop("connect_args", {}))
        if schema:
            settings = dict(connect_args.get("server_settings", {}))
            settings["search_path"] = schema
            connect_args["server_settings"] = settings
        return create_async_engine(u, connect_args=connect_args, pool_pre_ping=True, **kwargs)
    raise ValueError(f"unsupported database URL {u.render_as_string(hide_password=True)}: use sqlite or postgresql")


def _sqlite_engine(u: URL, **kwargs: Any) -> AsyncEngine:
    database = u.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.setdefault("poolclass", StaticPool)  # one shared connection, or each sees its own DB
    engine = create_async_engine(u, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA cache_size={SQLITE_CACHE_KIB:d}")  # negative: KiB; big imports and plans touch many index pages
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"{BEGIN_OPTION} must be DEFERRED, IMMEDIATE or EXCLUSIVE, not {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


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
