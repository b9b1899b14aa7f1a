"""Shared fixtures: a migrated database engine on SQLite and on PostgreSQL.

``engine`` is parametrized over both. SQLite gets a fresh file in ``tmp_path``. PostgreSQL needs
TOPSLOT_TEST_DATABASE_URL; each test session migrates its own freshly created schema (so parallel
runs never collide), every test starts from empty tables, and the schema is dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from database_support import truncate_all
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store.db import open_engine, upgrade

PG_URL_VAR = "TOPSLOT_TEST_DATABASE_URL"
PG_SKIP_REASON = f"{PG_URL_VAR} not set"


REDIS_URL_VAR = "TOPSLOT_TEST_REDIS_URL"


@pytest.fixture
def redis_test_url() -> str:
    """A Redis to test against (shared: use ``redis_prefix`` for keys), else the test is skipped."""
    url = os.environ.get(REDIS_URL_VAR)
    if not url:
        pytest.skip(f"{REDIS_URL_VAR} not set")
    return url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test run uses."""
    return f"topslot-test-{uuid.uuid4().hex[:12]}"


def pg_url() -> str | None:
    return os.environ.get(PG_URL_VAR) or None


def require_pg() -> str:
    url = pg_url()
    if not url:
        pytest.skip(PG_SKIP_REASON)
    return url


async def create_pg_schema(url: str) -> str:
    name = f"topslot_test_{uuid.uuid4().hex[:12]}"
    admin = open_engine(url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{name}"'))  # name is generated above, not input
    finally:
        await admin.dispose()
    return name


async def drop_pg_schema(url: str, name: str) -> None:
    admin = open_engine(url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        await admin.dispose()


@asynccontextmanager
async def pg_schema(url: str) -> AsyncIterator[str]:
    """A freshly created, empty PostgreSQL schema, dropped (with everything in it) afterwards."""
    name = await create_pg_schema(url)
    try:
        yield name
    finally:
        await drop_pg_schema(url, name)


def run_in_fresh_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion on its own loop in another thread (safe inside a running loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def pg_test_url() -> str:
    """The PostgreSQL test URL, or the test is skipped with a visible reason."""
    return require_pg()


@pytest.fixture
def make_pg_schema() -> Callable[[str], Any]:
    """``async with make_pg_schema(url) as schema:`` a fresh, empty schema dropped afterwards."""
    return pg_schema


@pytest.fixture(scope="session")
def pg_migrated_schema() -> Iterator[tuple[str, str]]:
    """(url, schema): one migrated schema for the whole session."""
    url = require_pg()

    async def setup() -> str:
        schema = await create_pg_schema(url)
        engine = open_engine(url, schema=schema)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        return schema

    schema = run_in_fresh_loop(setup())
    try:
        yield url, schema
    finally:
        run_in_fresh_loop(drop_pg_schema(url, schema))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty database: SQLite file or an isolated PostgreSQL schema."""
    if request.param == "sqlite":
        eng = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'topslot.db'}")
        await upgrade(eng)
    else:
        url, schema = request.getfixturevalue("pg_migrated_schema")
        eng = open_engine(url, schema=schema)
        await truncate_all(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


# Shared test-data helpers (e.g. segment_population) live next to this file.
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
