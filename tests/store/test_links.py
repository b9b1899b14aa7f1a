from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.links.book import LinkBook
from topslot.store.db import IMMEDIATE
from topslot.store.links import ROWS_PER_STATEMENT, destination, find_link, save_links
from topslot.store.schema import links

LONG_URL = "https://shop.example.com/p?" + "&".join(f"k{i}=%E8%8C%B6{i}" for i in range(200))  # > 2000 chars


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(links))).scalar_one()


async def test_save_then_look_up(engine: AsyncEngine) -> None:
    book = LinkBook("spring")
    landing, landing_url = book.add("https://shop.example.com/spring?utm_source=topslot")
    faq, faq_url = book.add("https://shop.example.com/faq")
    long_key, _ = book.add(LONG_URL)

    new = await save_links(engine, "spring", book.pending())

    assert new == {landing, faq, long_key}
    assert await destination(engine, "spring", landing) == landing_url
    assert await destination(engine, "spring", faq) == faq_url
    assert await destination(engine, "spring", long_key) == LONG_URL
    assert await destination(engine, "spring", "0000000000000000") is None
    assert await destination(engine, "autumn", landing) is None  # links belong to one campaign
    stored = await find_link(engine, "spring", faq)
    assert stored is not None and stored.url == faq_url and stored.id > 0


async def test_saving_again_changes_nothing(engine: AsyncEngine) -> None:
    pairs = {"00000000000000aa": "https://a.example/", "00000000000000bb": "https://b.example/"}
    assert await save_links(engine, "spring", pairs) == set(pairs)
    first = await find_link(engine, "spring", "00000000000000aa")

    again = await save_links(engine, "spring", {**pairs, "00000000000000cc": "https://c.example/"})

    assert again == {"00000000000000cc"}
    assert await find_link(engine, "spring", "00000000000000aa") == first  # same row, same id
    assert await save_links(engine, "autumn", pairs) == set(pairs)  # same keys, other campaign
    assert await count(engine) == 5
    assert await save_links(engine, "spring", {}) == set()


async def test_inside_a_transaction_the_rows_share_its_fate(engine: AsyncEngine) -> None:
    pairs = {"00000000000000aa": "https://a.example/"}
    async with engine.execution_options(**IMMEDIATE).connect() as conn:
        tx = await conn.begin()
        assert await save_links(conn, "spring", pairs) == set(pairs)
        assert await destination(conn, "spring", "00000000000000aa") == "https://a.example/"
        await tx.rollback()
    assert await destination(engine, "spring", "00000000000000aa") is None
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await save_links(conn, "spring", pairs)
    assert await destination(engine, "spring", "00000000000000aa") == "https://a.example/"


async def test_big_batches_are_split_into_statements(engine: AsyncEngine) -> None:
    n = ROWS_PER_STATEMENT * 2 + 17
    pairs = {f"{i:016x}": f"https://a.example/?r={i}" for i in range(n)}

    assert len(await save_links(engine, "spring", pairs)) == n
    assert await count(engine) == n
    assert await destination(engine, "spring", f"{n - 1:016x}") == f"https://a.example/?r={n - 1}"


async def test_concurrent_savers_of_overlapping_links_all_succeed(engine: AsyncEngine) -> None:
    shared = {f"{i:016x}": f"https://a.example/{i}" for i in range(200)}

    async def saver(worker: int) -> set[str]:
        own = {f"{worker:08x}{i:08x}": f"https://b.example/{worker}/{i}" for i in range(50)}
        return await save_links(engine, "spring", {**shared, **own})

    results = await asyncio.gather(*(saver(w) for w in range(1, 5)))

    assert await count(engine) == 200 + 4 * 50
    won = [r & set(shared) for r in results]
    assert set().union(*won) == set(shared)  # each shared key inserted by exactly one saver
    assert sum(len(w) for w in won) == len(shared)
