"""Plumbing shared by the CLI commands: settings, the database, campaigns, plain error lines."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.campaign import Campaign
from daemon.config import load_campaigns
from daemon.errors import InvalidInput, Problem
from daemon.settings import Settings, load_settings
from daemon.store.db import open_engine, upgrade

T = TypeVar("T")
ConfigOption = Annotated[Path, typer.Option("--config", help="Configuration directory (topslot.yaml, campaigns/).")]
out = Console()
err = Console(stderr=True)


def say(text: str) -> None:
    """One plain line on stderr (never wrapped, no markup: paths and messages stay greppable)."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        say(str(problem))


def settings_or_exit(config_dir: Path | None) -> Settings:
    """Settings, or every problem on stderr (one ``path:line:column: message`` per line) and exit 2."""
    try:
        return load_settings(config_dir)
    except InvalidInput as exc:
        print_problems(exc.problems)
        raise typer.Exit(2) from None


def with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Open the database, apply migrations, run ``work``, close."""

    async def run() -> T:
        engine = open_engine(settings.database_url)
        try:
            await upgrade(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def load_campaign_or_exit(settings: Settings, campaign_id: str) -> Campaign:
    result = load_campaigns(settings.campaigns_dir, settings.templates_dir)
    campaign = result.campaigns.get(campaign_id)
    if campaign is None:
        print_problems(result.problems)
        known = ", ".join(sorted(result.campaigns)) or "none"
        say(f"campaign {campaign_id!r} not found or invalid (valid campaigns: {known})")
        raise typer.Exit(2)
    return campaign
