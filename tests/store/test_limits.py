"""The shared limits' PostgreSQL store (``topslot.store.limits``) held to the ``LimitStore``
contract: two stores on two engines, as two processes would be, on one migrated schema."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from channels.limit_store_contract import CHECKS
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from topslot.channels.shared_limits import LimitStore
from topslot.store.db import open_engine
from topslot.store.limits import PostgresLimitStore
from topslot.store.schema import limit_slots, rate_buckets

pytestmark = pytest.mark.postgres

Pair = tuple[PostgresLimitStore, PostgresLimitStore]


@pytest.fixture
async def stores(pg_migrated_schema: tuple[str, str]) -> AsyncIterator[Pair]:
    url, schema = pg_migrated_schema
    engines = [open_engine(url, schema=schema) for _ in range(2)]
    async with engines[0].begin() as conn:
        await conn.execute(delete(rate_buckets))
        await conn.execute(delete(limit_slots))
    a, b = (PostgresLimitStore(engine) for engine in engines)
    yield a, b
    for store in (a, b):
        await store.close()
    for engine in engines:
        await engine.dispose()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_the_store_keeps_the_contract(
    stores: Pair, check: Callable[[LimitStore, LimitStore], Awaitable[None]]
) -> None:
    await check(*stores)


async def test_each_call_is_one_statement_on_a_kept_connection(stores: Pair) -> None:
    a, _ = stores
    await a.take("smtp:main", 1, 10.0, 1.0)
    connection = a._conn
    for _ in range(5):
        await a.take("smtp:main", 1, 10.0, 1.0)
    assert a._conn is connection and a.round_trips == 6


async def test_a_broken_connection_is_replaced_on_the_next_call(stores: Pair) -> None:
    a, _ = stores
    await a.take("smtp:main", 1, 10.0, 1.0)
    assert a._conn is not None
    await a._conn.invalidate()  # as if the server had closed it
    with pytest.raises(SQLAlchemyError):
        await a.take("smtp:main", 1, 10.0, 1.0)
    assert await a.take("smtp:main", 0, 10.0, 1.0) <= 1.0  # a new connection
    async with a._engine.connect() as conn:
        assert (await conn.execute(select(rate_buckets.c.name))).scalars().all() == ["smtp:main"]
