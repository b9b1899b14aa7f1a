"""Tracked-link destinations per campaign: saved in batches by the dispatcher before sending,
looked up by the tracking server when a click arrives (``links`` table)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.store.db import IMMEDIATE
from topslot.store.dialect import upsert_insert
from topslot.store.schema import links

ROWS_PER_STATEMENT = 1000  # 3 parameters a row: far below SQLite's and asyncpg's limits


@dataclass(frozen=True, slots=True)
class StoredLink:
    id: int  # events.link_id
    url: str


async def save_links(db: AsyncEngine | AsyncConnection, campaign_id: str, pairs: Mapping[str, str]) -> set[str]:
    """Store ``{link key: normalised url}`` for a campaign; keys already stored are left alone.

    On a connection the rows join the caller's transaction; on an engine they commit at once.
    Returns the keys that were new. Rows go in key order, so two nodes never deadlock on them.
    """
    if not pairs:
        return set()
    async with _transaction(db) as conn:
        rows = [{"campaign_id": campaign_id, "key": key, "url": pairs[key]} for key in sorted(pairs)]
        new: set[str] = set()
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            stmt = (
                upsert_insert(conn, links)
                .values(rows[start : start + ROWS_PER_STATEMENT])
                .on_conflict_do_nothing(index_elements=[links.c.campaign_id, links.c.key])
                .returning(links.c.key)
            )
            new.update((await conn.execute(stmt)).scalars())
    return new


async def find_link(db: AsyncEngine | AsyncConnection, campaign_id: str, key: str) -> StoredLink | None:
    """The stored link (id for events, destination URL), or None."""
    return await _first_link(
        db, select(links.c.id, links.c.url).where(links.c.campaign_id == campaign_id, links.c.key == key)
    )


async def find_link_by_key(db: AsyncEngine | AsyncConnection, key: str) -> StoredLink | None:
    """A stored link with this key in any campaign (keys derive from the destination alone, so every
    campaign's row with it has the same URL): how a proof's click (no delivery, no campaign) is
    redirected."""
    return await _first_link(
        db, select(links.c.id, links.c.url).where(links.c.key == key).order_by(links.c.id).limit(1)
    )


async def _first_link(db: AsyncEngine | AsyncConnection, stmt: Any) -> StoredLink | None:
    """The first (id, url) row of ``stmt``, on ``db`` itself or on a connection of it."""
    if isinstance(db, AsyncConnection):
        row = (await db.execute(stmt)).first()
    else:
        async with db.connect() as conn:
            row = (await conn.execute(stmt)).first()
    return StoredLink(row.id, row.url) if row is not None else None


async def destination(db: AsyncEngine | AsyncConnection, campaign_id: str, key: str) -> str | None:
    """Where a click on ``key`` in this campaign goes, or None (unknown: answer 404, never redirect)."""
    link = await find_link(db, campaign_id, key)
    return link.url if link is not None else None


@asynccontextmanager
async def _transaction(db: AsyncEngine | AsyncConnection) -> AsyncIterator[AsyncConnection]:
    if isinstance(db, AsyncConnection):
        yield db
        return
    async with db.execution_options(**IMMEDIATE).begin() as conn:
        yield conn
