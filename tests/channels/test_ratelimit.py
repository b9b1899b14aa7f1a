"""Token bucket arithmetic on a fake clock, real pacing loosely, and per-key concurrency."""

from __future__ import annotations

import asyncio

import pytest

from topslot.channels.ratelimit import KeyedLimiter, TokenBucket, due_delays, recipient_domain, refill

from .support import MonotonicFake


def test_burst_then_one_token_per_interval() -> None:
    clock = MonotonicFake()
    bucket = TokenBucket(10.0, burst=2, clock=clock)
    assert [bucket.reserve() for _ in range(2)] == [0.0, 0.0]
    # later callers queue behind each other, 0.1 s apart
    assert [round(bucket.reserve(), 6) for _ in range(3)] == [0.1, 0.2, 0.3]
    clock.advance(0.3)
    assert bucket.reserve() == pytest.approx(0.1)


def test_idle_time_refills_only_up_to_the_burst() -> None:
    clock = MonotonicFake()
    bucket = TokenBucket(100.0, burst=3, clock=clock)
    clock.advance(3600)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() == pytest.approx(0.01)


def test_default_burst_is_a_twentieth_of_a_second() -> None:
    assert TokenBucket(1000.0).burst == 50 and TokenBucket(5.0).burst == 1


def test_invalid_rates() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, burst=0.5)
    with pytest.raises(ValueError):
        KeyedLimiter(0)


async def test_acquire_sleeps_once_for_its_turn() -> None:
    clock = MonotonicFake()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    bucket = TokenBucket(4.0, burst=1, clock=clock, sleep=sleep)
    for _ in range(4):
        await bucket.acquire()
    assert sleeps == [0.25, 0.5, 0.75]


async def test_a_cancelled_waiter_gives_its_token_back() -> None:
    clock = MonotonicFake()
    bucket = TokenBucket(1.0, burst=1, clock=clock)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bucket.reserve() == pytest.approx(1.0)  # not 2.0: the cancelled reservation was refunded


async def test_keyed_limiter_bounds_each_key_and_forgets_idle_keys() -> None:
    limiter = KeyedLimiter(2)
    most: dict[str, int] = {}

    async def work(key: str) -> None:
        async with limiter.hold(key):
            most[key] = max(most.get(key, 0), limiter.in_use(key))
            await asyncio.sleep(0.005)

    await asyncio.gather(*(work(k) for k in ["a.example", "b.example"] * 10))
    assert most == {"a.example": 2, "b.example": 2}
    assert len(limiter) == 0 and limiter.in_use("a.example") == 0


async def test_keyed_limiter_releases_on_error() -> None:
    limiter = KeyedLimiter(1)
    with pytest.raises(RuntimeError):
        async with limiter.hold("a"):
            raise RuntimeError
    async with limiter.hold("a"):
        assert limiter.in_use("a") == 1
    assert len(limiter) == 0


@pytest.mark.parametrize(
    ("address", "domain"),
    [("Ann@Gmail.COM", "gmail.com"), ("a@b@example.org.", "example.org"), ("nobody", "nobody")],
)
def test_recipient_domain(address: str, domain: str) -> None:
    assert recipient_domain(address) == domain


def test_refill_adds_time_times_rate_up_to_the_burst_then_takes() -> None:
    assert refill(0.0, 0.5, 10.0, 3.0, 1) == 2.0  # 5 tokens' worth of time, capped at 3, one taken
    assert refill(-4.0, 0.1, 10.0, 3.0, 2) == -5.0  # a debt refills too; taking deepens it
    assert refill(1.0, -7.0, 10.0, 3.0, 1) == 0.0  # a clock stepping back refills nothing


def test_due_delays_space_a_batch_by_the_rate() -> None:
    assert due_delays(2.0, 3, 10.0) == [0.0, 0.0, 0.0]  # all three were there
    assert [round(d, 6) for d in due_delays(-2.0, 4, 10.0)] == [0.0, 0.0, 0.1, 0.2]
    # the in-process bucket is the same arithmetic: its reservations are the batch's delays
    clock = MonotonicFake()
    bucket = TokenBucket(10.0, burst=2, clock=clock)
    assert [round(bucket.reserve(), 6) for _ in range(4)] == [round(d, 6) for d in due_delays(-2.0, 4, 10.0)]
