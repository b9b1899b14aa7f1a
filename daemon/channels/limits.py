"""Which form the providers' limits take in this process: ``Limits``, handed to every messenger.

A messenger asks its ``Limits`` for a ``Pace`` per rate limit (``pace(name, rate)``) and a ``Slots``
per concurrency limit (``slots(name, limit)``), by the limit's name (``smtp:<server>``, ``twilio``,
``im:<name>``), always with the figure as configured for the whole deployment; and it sizes what is
its own (connection pools, requests in flight) by ``share`` (1/N with N dispatch processes).

- ``LocalLimits`` (SQLite: one node): in-process limits at ``share`` of each figure, so the N
  dispatch processes of the one node keep to the configured figures together.
- ``SharedLimits`` (PostgreSQL, or Redis with ``redis_url``): every process of every node takes
  from the same buckets and slots (``topslot.channels.shared_limits``), at the full figures.

``limits_for`` picks one from the settings and the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from topslot.channels.ratelimit import KeyedLimiter, Pace, Slots, TokenBucket
from topslot.channels.shared_limits import LimitStore, SharedKeyedLimiter, SharedTokenBucket, StoreHealth
from topslot.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

Monotonic = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


def scaled(count: int, share: float) -> int:
    """One dispatch process's part of a count (a pool, requests in flight): never below one."""
    return max(1, int(count * share + 1e-9))


class Limits(Protocol):
    """Where a messenger's limits come from (see the module docstring)."""

    share: float  # this process's part of what is its own: pools, requests in flight
    shared: bool  # True: the limits hold across processes and nodes

    def pace(self, name: str, rate: float, *, clock: Monotonic = ..., sleep: Sleep = ...) -> Pace:
        """The rate limit ``name``: ``rate`` messages/s for the whole deployment."""
        ...

    def own_rate(self, rate: float) -> float:
        """The rate a ``rate`` limit's pace is set to in this process: its share of it (local), the
        whole figure (shared: kept together with the other processes)."""
        ...

    def slots(self, name: str, limit: int) -> Slots:
        """The concurrency limit ``name``: at most ``limit`` at once per key, the whole deployment."""
        ...

    async def close(self) -> None: ...


class LocalLimits:
    """In-process limits: this process's ``share`` of each figure."""

    shared = False

    def __init__(self, share: float = 1.0):
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share

    def pace(self, name: str, rate: float, *, clock: Monotonic = time.monotonic, sleep: Sleep = asyncio.sleep) -> Pace:
        return TokenBucket(self.own_rate(rate), clock=clock, sleep=sleep)

    def own_rate(self, rate: float) -> float:
        return rate * self.share

    def slots(self, name: str, limit: int) -> Slots:
        return KeyedLimiter(scaled(limit, self.share))

    async def close(self) -> None:
        return None


class SharedLimits:
    """Limits held in ``store`` for every process of every node; ``holder`` names this process
    (its slot leases), ``share`` is only for what is this process's own."""

    shared = True

    def __init__(self, store: LimitStore, holder: str, share: float = 1.0):
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.store, self.holder, self.share = store, holder, share
        self.health = StoreHealth(getattr(store, "kind", type(store).__name__))
        self._slots: list[SharedKeyedLimiter] = []
        self._paces: list[SharedTokenBucket] = []

    def pace(self, name: str, rate: float, *, clock: Monotonic = time.monotonic, sleep: Sleep = asyncio.sleep) -> Pace:
        pace = SharedTokenBucket(self.store, name, rate, health=self.health, clock=clock, sleep=sleep)
        self._paces.append(pace)
        return pace

    def own_rate(self, rate: float) -> float:
        return rate

    def slots(self, name: str, limit: int) -> Slots:
        limiter = SharedKeyedLimiter(self.store, name, limit, self.holder, health=self.health)
        self._slots.append(limiter)
        return limiter

    async def close(self) -> None:
        for pace in self._paces:
            await pace.close()
        for limiter in self._slots:
            await limiter.close()
        self._paces, self._slots = [], []
        await self.store.close()


def are_shared(settings: Settings, database: str) -> bool:
    """Whether the limits are held for every process and node (``redis_url``, or a PostgreSQL
    ``database``: its dialect name) rather than in each process."""
    return bool(settings.redis_url) or database == "postgresql"


def limits_for(settings: Settings, engine: AsyncEngine | None, holder: str, share: float = 1.0) -> Limits:
    """``redis_url`` set: shared in Redis; a PostgreSQL ``engine``: shared in it; else (SQLite, or
    no database) in this process, at ``share``."""
    if settings.redis_url:  # checked first: Redis wins over PostgreSQL
        from topslot.channels.redis_limits import RedisLimitStore

        return SharedLimits(RedisLimitStore(settings.redis_url, settings.redis_key_prefix), holder, share)
    if engine is not None and are_shared(settings, engine.dialect.name):
        from topslot.store.limits import PostgresLimitStore

        return SharedLimits(PostgresLimitStore(engine), holder, share)
    return LocalLimits(share)
