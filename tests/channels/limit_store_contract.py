"""The ``LimitStore`` contract (``topslot.channels.shared_limits``), checked against a real store:
PostgreSQL in tests/store/test_limits.py, Redis in tests/channels/test_redis_limits.py. Each check
takes two stores on separate connections (two processes' views of one store)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from topslot.channels.shared_limits import LimitStore

SLOW = 0.001  # tokens per second: nothing measurable refills during a check


async def take_reserves_ahead_and_gives_back(a: LimitStore, b: LimitStore) -> None:
    assert await a.take("smtp:main", 3, SLOW, 5.0) == pytest.approx(2.0, abs=0.01)  # created full (5), 3 taken
    balance = await b.take("smtp:main", 10, SLOW, 5.0)  # the other process: the same bucket
    assert balance == pytest.approx(-8.0, abs=0.01)  # reserved ahead: due in 8 / rate seconds
    await a.give_back("smtp:main", 4, 5.0)
    assert await b.take("smtp:main", 0, SLOW, 5.0) == pytest.approx(-4.0, abs=0.01)
    await a.give_back("smtp:main", 1000, 5.0)
    assert await b.take("smtp:main", 0, SLOW, 5.0) == pytest.approx(5.0)  # never above the burst
    assert await a.take("twilio", 1, SLOW, 1.0) == pytest.approx(0.0, abs=0.01)  # buckets are by name


async def take_refills_by_the_stores_clock(a: LimitStore, b: LimitStore) -> None:
    first = await a.take("im:bot", 50, 1000.0, 1.0)  # deep in debt at 1,000/s
    await asyncio.sleep(0.01)
    second = await b.take("im:bot", 0, 1000.0, 1.0)
    assert first < second <= 1.0  # time refilled it, whoever asks


async def concurrent_takes_lose_no_token(a: LimitStore, b: LimitStore) -> None:
    takes = [store.take("im:gw", 1, SLOW, 1.0) for store in (a, b) for _ in range(10)]
    balances = await asyncio.gather(*takes)
    # each take saw the others': 20 distinct balances, from 0 down to -19 (0.001/s refills ~nothing)
    assert sorted(round(x) for x in balances) == list(range(-19, 1))


async def one(store: LimitStore, key: str, limit: int, holder: str, ttl: float, scope: str = "smtp:main") -> Any:
    """One slot of ``key``, or None."""
    got = (await store.grab(scope, {key: 1}, limit, holder, ttl)).get(key, [])
    assert len(got) <= 1
    return got[0] if got else None


async def grab_never_gives_more_than_the_limit(a: LimitStore, b: LimitStore) -> None:
    grabs = [store.grab("smtp:main", {"gmail.com": 2}, 3, h, 30.0) for store, h in ((a, "a"), (b, "b")) * 5]
    handles = [h for got in await asyncio.gather(*grabs) for h in got.get("gmail.com", [])]
    assert len(handles) <= 3 and len(set(handles)) == len(handles)
    while len(handles) < 3:  # concurrent grabs may have collided on one slot: the rest come on asking again
        handle = await one(a, "gmail.com", 3, "a", 30.0)
        assert handle is not None
        handles.append(handle)
    assert await one(b, "gmail.com", 3, "b", 30.0) is None
    assert await one(b, "yahoo.com", 3, "b", 30.0) is not None  # another key: its own slots
    assert await one(b, "gmail.com", 3, "b", 30.0, scope="smtp:other") is not None  # another scope too


async def grab_asks_for_many_keys_at_once(a: LimitStore, b: LimitStore) -> None:
    assert await one(b, "web.de", 2, "b", 30.0) is not None  # one of web.de's two slots is b's
    got = await a.grab("smtp:main", {"web.de": 3, "gmx.net": 2, "mail.ru": 1}, 2, "a", 30.0)
    assert {key: len(handles) for key, handles in got.items() if handles} == {"web.de": 1, "gmx.net": 2, "mail.ru": 1}
    assert a.round_trips == 1  # one round trip for the three keys
    assert await a.grab("smtp:main", {}, 2, "a", 30.0) == {}


async def free_and_expiry_release_slots(a: LimitStore, b: LimitStore) -> None:
    mine = await one(a, "aol.com", 1, "a", 30.0)
    assert mine is not None and await one(b, "aol.com", 1, "b", 30.0) is None
    await b.free("smtp:main", [("aol.com", mine)], "b")  # not b's: left alone
    assert await one(b, "aol.com", 1, "b", 30.0) is None
    await a.free("smtp:main", [("aol.com", mine)], "a")
    theirs = await one(b, "aol.com", 1, "b", 0.3)  # a short lease, never renewed
    assert theirs is not None and await one(a, "aol.com", 1, "a", 30.0) is None
    await asyncio.sleep(0.5)  # b died: its lease runs out
    assert await one(a, "aol.com", 1, "a", 30.0) is not None


async def renew_extends_only_the_holders_leases(a: LimitStore, b: LimitStore) -> None:
    mine = await one(a, "gmx.de", 1, "a", 0.3)
    assert mine is not None
    await b.renew("b", [("smtp:main", "gmx.de", mine)], 30.0)  # not b's: no effect
    await a.renew("a", [("smtp:main", "gmx.de", mine)], 30.0)
    await asyncio.sleep(0.5)  # past the first lease, within the renewed one
    assert await one(b, "gmx.de", 1, "b", 30.0) is None
    assert a.round_trips > 0


CHECKS = [
    take_reserves_ahead_and_gives_back,
    take_refills_by_the_stores_clock,
    concurrent_takes_lose_no_token,
    grab_never_gives_more_than_the_limit,
    grab_asks_for_many_keys_at_once,
    free_and_expiry_release_slots,
    renew_extends_only_the_holders_leases,
]
