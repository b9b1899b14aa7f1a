"""Engine options and migrations on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.store.db import IMMEDIATE, current_revision, normalise_url, open_engine, upgrade
from daemon.store.schema import campaigns, metadata


async def _schema_diff(engine: AsyncEngine) -> list:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True, "compare_server_default": True}),
                metadata,
            )
        )


async def _check_fresh_upgrade(engine: AsyncEngine) -> None:
    assert await current_revision(engine) is None
    await upgrade(engine)
    assert await current_revision(engine) == "0001"
    assert await _schema_diff(engine) == []
    await upgrade(engine)  # second time: a no-op
    assert await current_revision(engine) == "0001"
    assert await _schema_diff(engine) == []


async def test_migrations_match_schema_on_sqlite(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'topslot.db'}")
    try:
        await _check_fresh_upgrade(engine)
    finally:
        await engine.dispose()
    assert (tmp_path / "nested" / "dir" / "topslot.db").exists()


@pytest.mark.postgres
async def test_migrations_match_schema_on_postgresql(pg_test_url: str, make_pg_schema) -> None:
    url = pg_test_url
    async with make_pg_schema(url) as schema:
        engine = open_engine(url, schema=schema)
        try:
            await _check_fresh_upgrade(engine)
            async with engine.connect() as conn:
                tables = await conn.scalar(
                    text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
                )
            assert tables == len(metadata.tables) + 1  # + alembic_version
        finally:
            await engine.dispose()


async def test_upgrade_accepts_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'by-url.db'}"
    await upgrade(url)
    engine = open_engine(url)
    try:
        assert await current_revision(engine) == "0001"
    finally:
        await engine.dispose()


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10_000
    finally:
        await engine.dispose()


async def test_sqlite_rolls_back_and_begins_immediate(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}")
    await upgrade(engine)
    now = datetime(2027, 5, 6, tzinfo=UTC)
    try:
        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                await conn.execute(insert(campaigns), {"id": "a", "name": "A", "config_hash": "x", "loaded_at": now})
                raise RuntimeError("boom")
        async with engine.execution_options(**IMMEDIATE).begin() as conn:
            assert (await conn.scalar(select(campaigns.c.id))) is None
            await conn.execute(insert(campaigns), {"id": "b", "name": "B", "config_hash": "x", "loaded_at": now})
        async with engine.connect() as conn:
            assert (await conn.execute(select(campaigns.c.id))).scalars().all() == ["b"]
    finally:
        await engine.dispose()


async def test_timestamps_come_back_aware_utc(engine: AsyncEngine) -> None:
    local = datetime(2027, 5, 6, 7, 30, tzinfo=timezone(timedelta(hours=8)))
    async with engine.begin() as conn:
        await conn.execute(insert(campaigns), {"id": "c", "name": "C", "config_hash": "x", "loaded_at": local})
    async with engine.connect() as conn:
        loaded = await conn.scalar(select(campaigns.c.loaded_at))
    assert loaded == local and loaded.tzinfo == UTC and loaded.hour == 23


async def test_naive_timestamps_are_refused(engine: AsyncEngine) -> None:
    from sqlalchemy.exc import StatementError

    with pytest.raises(StatementError, match="naive datetime"):
        async with engine.begin() as conn:
            await conn.execute(
                insert(campaigns), {"id": "d", "name": "D", "config_hash": "x", "loaded_at": datetime(2027, 1, 1)}
            )


def test_normalise_url_picks_async_drivers() -> None:
    assert normalise_url("sqlite:///var/x.db").drivername == "sqlite+aiosqlite"
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert normalise_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        open_engine("mysql+aiomysql://u@h/db")
