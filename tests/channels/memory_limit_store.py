"""A ``LimitStore`` in memory, on an injected clock: the shared limiters' logic tested without a
database (the PostgreSQL and Redis stores are held to the same contract in their own tests)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence

from topslot.channels.ratelimit import refill


class MemoryLimitStore:
    kind = "memory"

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # name → (tokens, refilled at)
        self.slots: dict[tuple[str, str], dict[Hashable, tuple[str, float]]] = {}  # → handle → (holder, expires)
        self.calls: Counter[str] = Counter()
        self.taken: list[int] = []
        self.failing = False
        self.round_trips = 0
        self._handles = itertools.count()

    def _trip(self, method: str) -> None:
        if self.failing:
            raise ConnectionError("the store is down")
        self.round_trips += 1
        self.calls[method] += 1

    async def take(self, name: str, count: int, rate: float, burst: float) -> float:
        self._trip("take")
        now = self.clock()
        tokens, at = self.buckets.get(name, (burst, now))
        balance = refill(tokens, now - at, rate, burst, count)
        self.buckets[name] = (balance, max(at, now))
        self.taken.append(count)
        return balance

    async def give_back(self, name: str, count: int, burst: float) -> None:
        self._trip("give_back")
        tokens, at = self.buckets[name]
        self.buckets[name] = (min(burst, tokens + count), at)

    def live(self, scope: str, key: str) -> dict[Hashable, tuple[str, float]]:
        now = self.clock()
        return {h: v for h, v in self.slots.get((scope, key), {}).items() if v[1] > now}

    async def grab(
        self, scope: str, wanted: Mapping[str, int], limit: int, holder: str, ttl: float
    ) -> dict[str, list[Hashable]]:
        self._trip("grab")
        got: dict[str, list[Hashable]] = {}
        for key, count in wanted.items():
            live = self.live(scope, key)
            for _ in range(min(count, limit - len(live))):
                handle = next(self._handles)
                live[handle] = (holder, self.clock() + ttl)
                got.setdefault(key, []).append(handle)
            self.slots[(scope, key)] = live
        return got

    async def free(self, scope: str, slots: Sequence[tuple[str, Hashable]], holder: str) -> None:
        self._trip("free")
        for key, handle in slots:
            held = self.slots.get((scope, key), {})
            if held.get(handle, ("",))[0] == holder:
                del held[handle]

    async def renew(self, holder: str, held: Sequence[tuple[str, str, Hashable]], ttl: float) -> None:
        self._trip("renew")
        for scope, key, handle in held:
            slots = self.slots.get((scope, key), {})
            if handle in slots and slots[handle][0] == holder:
                slots[handle] = (holder, self.clock() + ttl)

    async def close(self) -> None:
        return None
