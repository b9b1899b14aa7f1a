"""The shared limiters' own logic over an in-memory store: tokens taken in batches and spaced by
the rate, several limiters (processes) keeping one rate and one per-key limit together, slots
reused without round trips, a dead holder's slots freed by their lease, an unreachable store."""

from __future__ import annotations

import asyncio
import time

import pytest

from topslot import metrics
from topslot.channels.limits import LocalLimits, SharedLimits, are_shared
from topslot.channels.ratelimit import KeyedLimiter, TokenBucket
from topslot.channels.shared_limits import SharedKeyedLimiter, SharedTokenBucket, StoreHealth
from topslot.errors import TransientSendError

from .memory_limit_store import MemoryLimitStore
from .support import FrozenTime

FAST_POLL = (0.001, 0.005)


def bucket(store: MemoryLimitStore, time_: FrozenTime, rate: float, **options: float) -> SharedTokenBucket:
    return SharedTokenBucket(
        store, "smtp:main", rate, health=StoreHealth("memory"), clock=time_.monotonic, sleep=time_.sleep, **options
    )


async def test_waiters_take_tokens_in_batches_spaced_by_the_rate() -> None:
    time_ = FrozenTime()
    store = MemoryLimitStore(time_.monotonic)
    pace = bucket(store, time_, 100.0, burst=5)  # a batch is 0.1 s of the rate: 10 tokens

    await asyncio.gather(*(pace.acquire() for _ in range(25)))

    assert store.taken == [10, 10, 5]  # three round trips for 25 messages, each for waiters
    assert store.buckets["smtp:main"][0] == pytest.approx(-20)  # 5 were there, 20 reserved ahead
    waits = sorted(round(s, 6) for s in time_.sleeps)
    for k in range(1, 21):  # the k-th token past the burst is due k/rate from now
        assert round(k / 100, 6) in waits


async def test_while_the_rate_does_not_bind_the_batch_follows_the_recent_demand() -> None:
    time_ = FrozenTime()
    store = MemoryLimitStore(time_.monotonic)
    pace = bucket(store, time_, 100.0, burst=100)  # plenty saved up: the rate does not bind
    for _ in range(4):  # one message at a time, four within the lookahead
        await pace.acquire()
    # the second round trip takes one for the third caller too (no round trip for it), the third
    # takes for the four that came within the lookahead
    assert store.taken == [1, 2, 4]


async def test_while_the_rate_binds_only_waiters_get_tokens() -> None:
    time_ = FrozenTime()
    store = MemoryLimitStore(time_.monotonic)
    pace = bucket(store, time_, 100.0, burst=1)
    for _ in range(4):  # the second take leaves a debt: from then on, no token for a caller to come
        await pace.acquire()
    assert store.taken == [1, 2, 1] and store.buckets["smtp:main"][0] == pytest.approx(-3)


async def test_tokens_left_unused_are_dropped_then_given_back_on_close() -> None:
    time_ = FrozenTime()
    store = MemoryLimitStore(time_.monotonic)
    pace = bucket(store, time_, 100.0, burst=100)
    for _ in range(4):
        await pace.acquire()  # [1, 2, 4] taken: 3 of the last batch left for callers to come
    await pace.close()  # none came
    assert store.calls["give_back"] == 1 and store.buckets["smtp:main"][0] == pytest.approx(100 - 7 + 3)


async def test_three_limiters_on_one_store_keep_one_rate() -> None:
    """Three processes' buckets, each with its own waiters: the store's balance says how far ahead
    tokens were reserved, the same as one bucket at the rate would have done."""
    time_ = FrozenTime()
    store = MemoryLimitStore(time_.monotonic)
    paces = [bucket(store, time_, 50.0, burst=1) for _ in range(3)]

    await asyncio.gather(*(p.acquire() for p in paces for _ in range(40)))

    balance = store.buckets["smtp:main"][0]
    assert balance == pytest.approx(1 - 120)  # 120 tokens: the last due 119 / 50 s from now, whoever took it
    assert sum(store.taken) == 120 and len(store.taken) < 120 / 2


async def test_a_cancelled_waiter_passes_its_token_on() -> None:
    time_ = FrozenTime()
    store = MemoryLimitStore(time_.monotonic)
    pace = bucket(store, time_, 10.0, burst=1)
    first = asyncio.create_task(pace.acquire())
    second = asyncio.create_task(pace.acquire())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert second.done() and not second.cancelled()
    assert sum(store.taken) == 1  # the token the first had is the second's: none taken twice


async def test_an_unreachable_store_fails_waiters_as_transient_and_recovers() -> None:
    time_ = FrozenTime()
    store = MemoryLimitStore(time_.monotonic)
    health = StoreHealth("memory", hold=0)  # give up at once
    pace = SharedTokenBucket(store, "twilio", 10.0, health=health, clock=time_.monotonic, sleep=time_.sleep)
    slots = SharedKeyedLimiter(store, "smtp:main", 2, "me", health=health)
    before = metrics.SHARED_LIMIT_FAILURES.labels("memory")._value.get()
    store.failing = True

    with pytest.raises(TransientSendError) as caught:
        await pace.acquire()
    assert caught.value.code == "limits_unavailable" and caught.value.retry_after
    with pytest.raises(TransientSendError):
        async with slots.hold("a.example"):
            pass
    assert health.failing and metrics.SHARED_LIMIT_FAILURES.labels("memory")._value.get() == before + 2

    store.failing = False
    await pace.acquire()
    assert not health.failing
    await slots.close()


async def test_two_limiters_never_pass_the_per_key_limit_together() -> None:
    store = MemoryLimitStore(time.monotonic)
    limiters = [
        SharedKeyedLimiter(store, "smtp:main", 2, holder, health=StoreHealth("memory"), poll=FAST_POLL)
        for holder in ("a", "b")
    ]
    now = most = 0

    async def send(limiter: SharedKeyedLimiter) -> None:
        nonlocal now, most
        async with limiter.hold("gmail.com"):
            now += 1
            most = max(most, now)
            await asyncio.sleep(0.002)
            now -= 1

    await asyncio.gather(*(send(limiter) for limiter in limiters for _ in range(15)))
    assert most == 2
    for limiter in limiters:
        await limiter.close()
    assert store.live("smtp:main", "gmail.com") == {}  # everything freed on close


async def test_a_busy_domain_reuses_its_slot_without_round_trips() -> None:
    store = MemoryLimitStore(time.monotonic)
    slots = SharedKeyedLimiter(store, "smtp:main", 3, "me", health=StoreHealth("memory"), linger=0.05)
    for _ in range(10):
        async with slots.hold("gmail.com"):
            pass
    assert store.calls["grab"] == 1 and slots.held() == 1
    await asyncio.sleep(0.2)  # unused past its linger: freed in the store
    assert store.calls["free"] == 1 and slots.held() == 0
    await slots.close()


async def test_a_dead_holders_slots_free_when_their_lease_runs_out() -> None:
    store = MemoryLimitStore(time.monotonic)
    for _ in range(2):  # a process that took both slots and died: nobody frees them, nobody renews
        await store.grab("smtp:main", {"gmail.com": 1}, 2, "dead", 0.05)
    slots = SharedKeyedLimiter(store, "smtp:main", 2, "me", health=StoreHealth("memory"), poll=FAST_POLL)

    async with asyncio.timeout(5):
        async with slots.hold("gmail.com"):
            holders = {holder for holder, _ in store.live("smtp:main", "gmail.com").values()}
    assert holders == {"me"}
    await slots.close()


async def test_held_slots_are_renewed_before_their_lease_runs_out() -> None:
    store = MemoryLimitStore(time.monotonic)
    slots = SharedKeyedLimiter(store, "smtp:main", 1, "me", health=StoreHealth("memory"), ttl=0.06)
    async with slots.hold("gmail.com"):
        await asyncio.sleep(0.15)  # over two leases long
        assert store.calls["renew"] >= 2
        assert await store.grab("smtp:main", {"gmail.com": 1}, 1, "other", 1.0) == {}  # still mine
    await slots.close()


async def test_local_limits_divide_each_figure_and_shared_limits_do_not() -> None:
    local = LocalLimits(share=0.25)
    pace, slots = local.pace("smtp:main", 40.0), local.slots("smtp:main", 8)
    assert isinstance(pace, TokenBucket) and pace.rate == 10.0
    assert isinstance(slots, KeyedLimiter) and slots.limit == 2
    shared = SharedLimits(MemoryLimitStore(time.monotonic), "node/boot", share=0.25)
    pace, slots = shared.pace("smtp:main", 40.0), shared.slots("smtp:main", 8)
    assert isinstance(pace, SharedTokenBucket) and pace.rate == 40.0 and shared.own_rate(40.0) == 40.0
    assert isinstance(slots, SharedKeyedLimiter) and slots.limit == 8
    await shared.close()


def test_limits_are_shared_on_postgresql_or_with_redis(tmp_path: object) -> None:
    from topslot.settings import Settings

    plain = Settings(config_dir=tmp_path)
    with_redis = Settings(config_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0")
    assert not are_shared(plain, "sqlite") and are_shared(plain, "postgresql")
    assert are_shared(with_redis, "sqlite")


async def test_a_store_failing_for_a_moment_costs_the_waiters_a_moment() -> None:
    store = MemoryLimitStore(time.monotonic)
    health = StoreHealth("memory", hold=5.0)
    pace = SharedTokenBucket(store, "twilio", 1000.0, health=health)
    slots = SharedKeyedLimiter(store, "smtp:main", 2, "me", health=health)
    store.failing = True
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, setattr, store, "failing", False)  # a dropped connection, replaced

    async with asyncio.timeout(5):
        await pace.acquire()
        async with slots.hold("a.example"):
            pass
    assert not health.failing and store.calls["take"] == 1
    await slots.close()
