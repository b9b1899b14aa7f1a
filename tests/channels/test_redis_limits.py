"""The shared limits' Redis store (``topslot.channels.redis_limits``) held to the ``LimitStore``
contract: two clients, as two processes would be, under a key prefix of this test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.exceptions

from topslot.channels.redis_limits import RedisLimitStore
from topslot.channels.shared_limits import LimitStore

from .limit_store_contract import CHECKS

pytestmark = pytest.mark.redis

Pair = tuple[RedisLimitStore, RedisLimitStore]


@pytest.fixture
async def stores(redis_test_url: str, redis_prefix: str) -> AsyncIterator[Pair]:
    a, b = RedisLimitStore(redis_test_url, redis_prefix), RedisLimitStore(redis_test_url, redis_prefix)
    yield a, b
    keys = [key async for key in a._client.scan_iter(match=f"{redis_prefix}:*")]
    if keys:
        await a._client.delete(*keys)
    for store in (a, b):
        await store.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_the_store_keeps_the_contract(
    stores: Pair, check: Callable[[LimitStore, LimitStore], Awaitable[None]]
) -> None:
    await check(*stores)


async def test_keys_expire_on_their_own(stores: Pair, redis_prefix: str) -> None:
    a, _ = stores
    await a.take("smtp:main", 1, 10.0, 1.0)
    await a.grab("smtp:main", {"gmail.com": 1}, 2, "a", 5.0)
    ttls = [await a._client.ttl(key) async for key in a._client.scan_iter(match=f"{redis_prefix}:*")]
    assert len(ttls) == 2 and all(0 < ttl <= 3600 for ttl in ttls)


async def test_an_unreachable_redis_raises(redis_prefix: str) -> None:
    store = RedisLimitStore("redis://127.0.0.1:1/0", redis_prefix)  # nothing listens on port 1
    with pytest.raises(redis.exceptions.ConnectionError):
        await store.take("smtp:main", 1, 10.0, 1.0)
    await store.close()
