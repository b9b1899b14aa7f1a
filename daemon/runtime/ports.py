"""The daemon's calls into the other layers (config loader, store), in one place."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.config import LoadResult
from daemon.config import load_campaigns as load_campaign_dir
from daemon.errors import InvalidInput
from daemon.rendering import compile_campaign
from daemon.settings import Compliance
from daemon.store.db import open_engine, upgrade


def load_campaigns(campaigns_dir: Path, templates_dir: Path, compliance: Compliance) -> LoadResult:
    """Load and validate every campaign file, with file paths resolved (the registry compares them).

    A campaign must also compile for sending (CSS inlining, link rewriting, compliance footer):
    one that does not is reported like any other problem and is not loaded."""
    result = load_campaign_dir(campaigns_dir, templates_dir)
    campaigns = {}
    problems = list(result.problems)
    for cid, campaign in result.campaigns.items():
        try:
            compile_campaign(campaign, templates_dir, compliance)
        except InvalidInput as exc:
            problems.extend(exc.problems)
        else:
            campaigns[cid] = campaign
    return LoadResult(
        campaigns=campaigns,
        problems=problems,
        sources={cid: path.resolve() for cid, path in result.sources.items()},
        files=[path.resolve() for path in result.files],
    )


async def open_database(url: str) -> AsyncEngine:
    """Open the engine and bring the schema up to date."""
    engine = open_engine(url)
    await upgrade(engine)
    return engine
