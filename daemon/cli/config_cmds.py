"""``topslot validate`` and ``topslot schema``: check campaign files, print the campaign JSON Schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from topslot.campaign import Campaign
from topslot.channels.registry import route_lines
from topslot.cli.common import settings_or_exit
from topslot.clock import SystemClock
from topslot.errors import Problem
from topslot.runtime.ports import load_campaigns
from topslot.scheduling.plan_run import channel_rates, ledger_windows
from topslot.settings import Settings
from topslot.store.db import DatabaseUnavailable, prepare_database


def campaign_schema() -> dict[str, Any]:
    """The campaign JSON Schema, as editors (yaml-language-server) use it."""
    schema = Campaign.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(campaign_schema(), indent=2, ensure_ascii=False) + "\n"


def validate(
    config_dir: Annotated[Path, typer.Argument(help="Configuration directory; campaigns are in its campaigns/")] = Path(
        "config"
    ),
    templates: Annotated[
        Path | None,  # noqa: UP007 - typer needs Optional here
        typer.Option("--templates", help="Templates directory (default: the settings' templates_dir, as the daemon)"),
    ] = None,
) -> None:
    """Check every campaign file (and topslot.yaml); print each problem as path:line:column: message.
    Exit 1 when a campaign has problems, 2 when the settings do (the campaigns are not checked then).
    With a ledger, warn of every planned bucket that cannot fit its window at the configured rate."""
    settings = settings_or_exit(config_dir, report=_settings_problems)
    campaigns_dir = config_dir / "campaigns"  # as given: problems name files the way the user wrote them
    if not campaigns_dir.is_dir():
        typer.echo(f"error: {campaigns_dir} is not a directory (expected CONFIG_DIR/campaigns)", err=True)
        raise typer.Exit(2)
    templates_dir = templates or _as_given(settings.templates_dir)
    # As the daemon loads them: valid YAML and templates, and compilable for sending (CSS, links, footer).
    result = load_campaigns(campaigns_dir, templates_dir, settings)
    for problem in result.problems:
        typer.echo(str(problem))
    valid = len(result.campaigns)
    if result.problems:
        files = len({p.path for p in result.problems})
        typer.echo(
            f"error: {len(result.problems)} problem(s) in {files} file(s); "
            f"{valid} of {len(result.files)} campaign(s) valid",
            err=True,
        )
        raise typer.Exit(1)
    names = ", ".join(sorted(result.campaigns))
    detail = f" ({names})" if names else f" (no files in {campaigns_dir})"
    typer.echo(f"ok: {valid} campaign(s) valid{detail}", err=True)
    for campaign in sorted(result.campaigns.values(), key=lambda c: c.id):
        for line in route_lines(campaign, settings):
            typer.echo(f"  {campaign.id}: {line}", err=True)
    for line in asyncio.run(window_warnings(settings, result.campaigns.values())):
        typer.echo(f"warning: {line}", err=True)


async def window_warnings(settings: Settings, campaigns: Iterable[Campaign]) -> list[str]:
    """Each bucket planned in the ledger that cannot be handed over in its window at the rates the
    settings give now (``campaign: bucket ...``). Nothing without a ledger (nothing planned yet):
    validate never creates or migrates a database."""
    try:
        engine = await prepare_database(settings.database_url, read_only=True)
    except DatabaseUnavailable:
        return []
    lines = []
    try:
        now = SystemClock().now()
        for campaign in sorted(campaigns, key=lambda c: c.id):
            windows = await ledger_windows(engine, campaign, channel_rates(settings, campaign), now)
            lines += [f"{campaign.id}: {w.warning.message()}" for w in windows if w.warning is not None]
    finally:
        await engine.dispose()
    return lines


def _settings_problems(problems: list[Problem]) -> None:
    """validate's output is its problems: on stdout, like the campaigns' (the count on stderr)."""
    for problem in problems:
        typer.echo(str(problem))
    typer.echo(f"error: {len(problems)} problem(s) in the settings; campaigns not checked", err=True)


def _as_given(path: Path) -> Path:
    """``path`` relative to the working directory when it is inside it (settings hold absolute paths)."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def schema() -> None:
    """Print the campaign JSON Schema (a copy is kept in docs/campaign.schema.json)."""
    typer.echo(schema_text(), nl=False)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("schema")(schema)
