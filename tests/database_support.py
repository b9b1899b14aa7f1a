"""What tests that open their own engines share with the ``engine`` fixture (tests/conftest.py)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store.schema import metadata


async def truncate_all(engine: AsyncEngine) -> None:
    """Empty every topslot table of a PostgreSQL schema (identities restarted)."""
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)  # our own table names
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
