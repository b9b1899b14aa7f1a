"""The daemon's calls into the other layers (config loader, store), in one place."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.config import LoadResult
from daemon.config import load_campaigns as load_campaign_dir
from daemon.store.db import open_engine, upgrade


def load_campaigns(campaigns_dir: Path, templates_dir: Path) -> LoadResult:
    """Load and validate every campaign file, with file paths resolved (the registry compares them)."""
    result = load_campaign_dir(campaigns_dir, templates_dir)
    return LoadResult(
        campaigns=result.campaigns,
        problems=result.problems,
        sources={cid: path.resolve() for cid, path in result.sources.items()},
        files=[path.resolve() for path in result.files],
    )


async def open_database(url: str) -> AsyncEngine:
    """Open the engine and bring the schema up to date."""
    engine = open_engine(url)
    await upgrade(engine)
    return engine
