"""The daemon's calls into the other layers (config loader, store), in one place."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.campaign import Campaign
from daemon.config import LoadResult
from daemon.config import load_campaigns as load_campaign_dir
from daemon.config.campaigns import CampaignCheck
from daemon.errors import InvalidInput, Problem
from daemon.rendering import compile_campaign
from daemon.settings import Compliance
from daemon.store.db import prepare_database


def load_campaigns(campaigns_dir: Path, templates_dir: Path, compliance: Compliance) -> LoadResult:
    """Load and validate every campaign file, with file paths resolved (the registry compares them).

    A campaign must also compile for sending (CSS inlining, link rewriting, compliance footer):
    one that does not is reported like any other problem and is not loaded."""
    return resolved(load_campaign_dir(campaigns_dir, templates_dir, compiles_check(templates_dir, compliance)))


def compiles_check(templates_dir: Path, compliance: Compliance) -> CampaignCheck:
    """The check that a valid campaign also compiles for sending with these settings."""

    def check(campaign: Campaign) -> list[Problem]:
        try:
            compile_campaign(campaign, templates_dir, compliance)
        except InvalidInput as exc:
            return list(exc.problems)
        return []

    return check


def resolved(result: LoadResult) -> LoadResult:
    """The same result with file paths resolved (the registry compares them)."""
    return LoadResult(
        campaigns=result.campaigns,
        problems=result.problems,
        sources={cid: path.resolve() for cid, path in result.sources.items()},
        files=[path.resolve() for path in result.files],
    )


async def open_database(url: str) -> AsyncEngine:
    """Open the engine and bring the schema up to date (``DatabaseUnavailable``: one clear line)."""
    return await prepare_database(url)
