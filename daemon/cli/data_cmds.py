"""``topslot contacts import``, ``topslot events import``, ``topslot audience`` and ``topslot db upgrade``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.campaign import Campaign
from daemon.clock import SystemClock
from daemon.errors import InvalidInput, Problem
from daemon.imports.fields import instant
from daemon.imports.report import ImportReport
from daemon.settings import Settings, load_settings
from daemon.store.audience import LEFT_OUT_REASONS, AudienceSummary, audience_summary
from daemon.store.contacts import DEFAULT_BATCH_SIZE, import_contacts
from daemon.store.db import open_engine, upgrade
from daemon.store.events import import_events

T = TypeVar("T")
ConfigOption = Annotated[Path, typer.Option("--config", help="Configuration directory (topslot.yaml, campaigns/).")]
out = Console()
err = Console(stderr=True)

contacts_app = typer.Typer(help="Contacts: import and update.", no_args_is_help=True)
events_app = typer.Typer(help="Purchase and search history.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(contacts_app, name="contacts")
    app.add_typer(events_app, name="events")
    app.add_typer(db_app, name="db")
    app.command("audience")(audience)


# ---------------------------------------------------------------- plumbing


def _settings(config_dir: Path) -> Settings:
    try:
        return load_settings(config_dir)
    except InvalidInput as exc:
        _print_problems(exc.problems)
        raise typer.Exit(2) from None


def _say(text: str) -> None:
    """One plain line on stderr (never wrapped, no markup: paths and messages stay greppable)."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        _say(str(problem))


def _with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Open the database, apply migrations, run ``work``, close."""

    async def run() -> T:
        engine = open_engine(settings.database_url)
        try:
            await upgrade(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _report_import(what: str, report: ImportReport) -> None:
    _print_problems(report.problems)
    table = Table(title=what)
    for column in ("imported", "updated", "ignored", "rejected"):
        table.add_column(column, justify="right")
    table.add_row(str(report.imported), str(report.updated), str(report.ignored), str(report.rejected))
    out.print(table)
    if not report.ok:
        raise typer.Exit(1)


def _existing_file(path: Path) -> Path:
    if not path.is_file():
        _say(f"{path}: no such file")
        raise typer.Exit(2)
    return path


# ---------------------------------------------------------------- commands


@contacts_app.command("import")
def contacts_import(
    file: Annotated[Path, typer.Argument(help="CSV (with a header row) or JSON Lines file.")],
    config: ConfigOption = Path("config"),
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per transaction.")] = DEFAULT_BATCH_SIZE,
) -> None:
    """Upsert contacts by external_id; bad rows are listed and skipped (exit 1), good rows are kept."""
    settings = _settings(config)
    path = _existing_file(file)
    report = _with_engine(
        settings,
        lambda engine: import_contacts(
            engine, path, now=SystemClock().now(), default_country=settings.default_country, batch_size=batch_size
        ),
    )
    _report_import(f"contacts from {path}", report)


@events_app.command("import")
def events_import(
    file: Annotated[Path, typer.Argument(help="CSV or JSON Lines: type=purchase or type=search rows.")],
    config: ConfigOption = Path("config"),
) -> None:
    """Import purchases and searches; re-importing the same file changes nothing."""
    settings = _settings(config)
    path = _existing_file(file)
    report = _with_engine(settings, lambda engine: import_events(engine, path))
    _report_import(f"events from {path}", report)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = Path("config")) -> None:
    """Apply the database migrations (also done before every command that uses the database)."""
    settings = _settings(config)

    async def done(_engine: AsyncEngine) -> None:
        return None

    _with_engine(settings, done)
    out.print("database is up to date", markup=False)


def audience(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    config: ConfigOption = Path("config"),
    at: Annotated[
        str | None, typer.Option("--at", help="Evaluate the segment at this ISO 8601 instant (default: now).")
    ] = None,
) -> None:
    """How many contacts a campaign reaches per channel, and why the others are left out."""
    settings = _settings(config)
    campaign = _load_campaign(settings, campaign_id)
    try:
        now = instant(at, "--at") if at else SystemClock().now()
    except ValueError as exc:
        _say(str(exc))
        raise typer.Exit(2) from None
    summary = _with_engine(settings, lambda engine: audience_summary(engine, campaign, now))
    _print_audience(summary, now)


def _load_campaign(settings: Settings, campaign_id: str) -> Campaign:
    from daemon.config.campaigns import load_campaigns

    result = load_campaigns(Path(settings.config_dir) / "campaigns", settings.templates_dir)
    campaign = result.campaigns.get(campaign_id)
    if campaign is None:
        _print_problems(result.problems)
        known = ", ".join(sorted(result.campaigns)) or "none"
        _say(f"campaign {campaign_id!r} not found or invalid (valid campaigns: {known})")
        raise typer.Exit(2)
    return campaign


def _print_audience(summary: AudienceSummary, now: datetime) -> None:
    table = Table(title=f"{summary.campaign_id}: {summary.segment} contacts in the segment at {now.isoformat()}")
    table.add_column("channel")
    table.add_column("eligible", justify="right")
    for reason in LEFT_OUT_REASONS:
        table.add_column(reason.replace("_", " "), justify="right")
    for channel, counts in summary.channels.items():
        table.add_row(channel, str(counts.eligible), *(str(counts.left_out[r]) for r in LEFT_OUT_REASONS))
    out.print(table)
