"""Delivery → campaign lookups for clicks: one query per block, shared by concurrent misses."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store.tracking_events import campaigns_of_range
from topslot.tracking.directory import CampaignDirectory
from tracking.fixtures import make_world


async def test_a_block_is_loaded_once_for_many_concurrent_misses(engine: AsyncEngine, tmp_path: Path) -> None:
    world = await make_world(engine, tmp_path)
    ids = sorted(world.delivery.values())
    directory = CampaignDirectory(engine, block=1024)
    found = await asyncio.gather(*(directory.campaign_of(i) for i in ids * 5))
    assert set(found) == {world.campaign.id} and directory.loads == 1
    assert await directory.campaign_of(ids[0]) == world.campaign.id and directory.loads == 1  # cached
    assert await directory.campaign_of(5000) is None and directory.loads == 2  # unknown: not cached
    assert await directory.campaign_of(5000) is None and directory.loads == 3


async def test_small_blocks_and_a_small_cache_still_answer_right(engine: AsyncEngine, tmp_path: Path) -> None:
    world = await make_world(engine, tmp_path)
    directory = CampaignDirectory(engine, block=2, maxsize=1)
    for _ in range(2):
        for delivery_id in world.delivery.values():
            assert await directory.campaign_of(delivery_id) == world.campaign.id
    assert len(directory.cache) == 1
    assert await campaigns_of_range(engine, 0, 10**9) == {i: world.campaign.id for i in await _all_ids(engine)}


async def _all_ids(engine: AsyncEngine) -> list[int]:
    from sqlalchemy import select

    from topslot.store.schema import deliveries

    async with engine.connect() as conn:
        return list((await conn.execute(select(deliveries.c.id))).scalars())
