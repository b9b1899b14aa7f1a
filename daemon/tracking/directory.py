"""Which campaign a delivery belongs to, for click redirects: a bounded cache filled a block at a time.

A click token names a delivery and a link key; the destination is stored per campaign. Asking the
database once per delivery costs a round trip per first click, which under load is most of a
click's cost. So a miss loads the campaign of every delivery in the same block of ``block`` ids
(deliveries are planned in batches: neighbours are sent together and clicked together) in one
query, and concurrent misses in one block share it. Delivery → campaign never changes, so cached
entries never go stale; the cache is a bounded LRU. Nothing is cached for an id that is not found.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store.tracking_events import campaigns_of_range
from topslot.tracking.cache import LruCache

DEFAULT_BLOCK = 1024


class CampaignDirectory:
    def __init__(self, engine: AsyncEngine, *, maxsize: int = 200_000, block: int = DEFAULT_BLOCK):
        self.engine = engine
        self.block = block
        self.cache: LruCache[int, str] = LruCache(maxsize)
        self._loading: dict[int, asyncio.Future[dict[int, str]]] = {}
        self.loads = 0  # block queries made

    async def campaign_of(self, delivery_id: int) -> str | None:
        found = self.cache.get(delivery_id)
        if found is not None:
            return found
        number = delivery_id // self.block
        pending = self._loading.get(number)
        if pending is None:
            pending = asyncio.ensure_future(self._load(number))
            self._loading[number] = pending
            pending.add_done_callback(lambda _: self._loading.pop(number, None))
        return (await asyncio.shield(pending)).get(delivery_id)

    async def _load(self, number: int) -> dict[int, str]:
        first = number * self.block
        found = await campaigns_of_range(self.engine, first, first + self.block - 1)
        self.loads += 1
        for delivery_id, campaign_id in found.items():
            self.cache.put(delivery_id, campaign_id)
        return found
