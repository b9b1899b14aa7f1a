"""``topslot demo``: the newcomer's tour on embedded defaults (SQLite under var/, the example config).

Steps: database + migrations → validate the example campaigns → import the example contacts and
events → audience and plan summaries → start the daemon → stop (unless kept running) → what next.
Each step is a small function so later issues can add one (sending to var/outbox on a simulated clock).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.campaign import Campaign
from daemon.clock import Clock
from daemon.config import LoadResult
from daemon.imports.report import ImportReport
from daemon.planning import summary_lines
from daemon.runtime import ports
from daemon.runtime.service import Daemon
from daemon.scheduling.plan_run import plan_campaign
from daemon.settings import Settings
from daemon.store.audience import AudienceSummary, audience_summary
from daemon.store.contacts import import_contacts
from daemon.store.events import import_events


async def run_demo(settings: Settings, console: Console, clock: Clock, keep_running: bool = False) -> int:
    """Run the tour; returns the exit code (0: all steps shown)."""
    console.print(
        Panel.fit(
            "[bold]topslot demo[/bold] — every message lands just before 07:30 or 17:00 in the recipient's "
            "own time zone.\nEverything below runs on embedded defaults: SQLite in "
            f"[cyan]{_rel(settings.var_dir)}[/cyan], config in [cyan]{_rel(settings.config_dir)}[/cyan].",
            border_style="green",
        )
    )
    now = clock.now()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]

    console.rule("1. database")
    engine = await ports.open_database(settings.database_url)
    try:
        console.print(f"schema up to date in [cyan]{_database_label(settings)}[/cyan]")

        console.rule("2. campaigns")
        loaded = ports.load_campaigns(settings.campaigns_dir, settings.templates_dir, settings.compliance)
        show_campaigns(console, loaded)

        console.rule("3. example data")
        await import_example_data(console, engine, settings, now)

        console.rule("4. audiences")
        for campaign in loaded.campaigns.values():
            await show_audience(console, engine, campaign, now)

        console.rule("5. plan")
        for campaign in loaded.campaigns.values():
            await show_plan_summary(console, engine, campaign, now, settings)
    finally:
        await engine.dispose()

    console.rule("6. daemon")
    readable = settings.model_copy(update={"log_format": "console"})  # the tour is for people
    daemon = Daemon(readable, clock=clock, log_stream=console.file, handle_signals=keep_running)
    async with daemon:
        console.print(
            f"[green]daemon ready[/green]: {len(daemon.campaigns)} campaign(s) active, "
            f"watching [cyan]{_rel(settings.campaigns_dir)}[/cyan]"
        )
        if keep_running:
            console.print("running — edit a campaign file to see it reloaded; Ctrl-C to stop")
            await daemon.wait_stopped()
    show_next_steps(console, settings, sorted(loaded.campaigns))
    return 1 if loaded.problems or not loaded.campaigns else 0


def show_campaigns(console: Console, loaded: LoadResult) -> None:
    table = Table("campaign", "channels", "dates", "slots", "days", "file")
    for cid, c in sorted(loaded.campaigns.items()):
        source = loaded.sources.get(cid)
        table.add_row(
            cid,
            ", ".join(c.channels),
            f"{c.schedule.start} → {c.schedule.end}",
            " ".join(c.schedule.slots),
            c.schedule.days if isinstance(c.schedule.days, str) else ",".join(c.schedule.days),
            _rel(source) if source else "",
        )
    console.print(table)
    for problem in loaded.problems:
        console.print(f"[red]{problem}[/red]")
    verdict = "[green]valid[/green]" if not loaded.problems else f"[red]{len(loaded.problems)} problem(s)[/red]"
    console.print(f"{len(loaded.campaigns)} campaign(s) {verdict}")


async def import_example_data(console: Console, engine: AsyncEngine, settings: Settings, now: datetime) -> None:
    """Import config/example/contacts.csv then events.csv (re-running is safe: contacts upsert, events dedupe)."""
    example = settings.config_dir / "example"
    contacts, events = example / "contacts.csv", example / "events.csv"
    if contacts.is_file():
        report = await import_contacts(engine, contacts, now=now, default_country=settings.default_country)
        _show_import(console, "contacts", contacts, report)
    else:
        console.print(f"[yellow]no {_rel(contacts)} — skipped[/yellow]")
    if events.is_file():
        _show_import(console, "events", events, await import_events(engine, events))
    else:
        console.print(f"[yellow]no {_rel(events)} — skipped[/yellow]")


def _show_import(console: Console, kind: str, path: Path, report: ImportReport) -> None:
    counts = [f"{getattr(report, name)} {name}" for name in ("imported", "updated", "ignored", "rejected")]
    console.print(f"{kind}: {', '.join(counts)} from [cyan]{_rel(path)}[/cyan]")
    for problem in report.problems[:10]:
        console.print(f"  [yellow]{problem}[/yellow]", markup=True, highlight=False)


async def show_audience(console: Console, engine: AsyncEngine, campaign: Campaign, now: datetime) -> None:
    console.print(audience_table(campaign, await audience_summary(engine, campaign, now)))


def audience_table(campaign: Campaign, summary: AudienceSummary) -> Table:
    """Per channel: who gets it, and how many were left out and why."""
    reasons = sorted({reason for ch in summary.channels.values() for reason in ch.left_out})
    table = Table(title=f"{campaign.id}: {summary.segment} contact(s) in the segment")
    table.add_column("channel")
    table.add_column("eligible", justify="right")
    for reason in reasons:
        table.add_column(reason.replace("_", " "), justify="right")
    for name, ch in summary.channels.items():
        table.add_row(name, str(ch.eligible), *(str(ch.left_out.get(r, 0)) for r in reasons))
    return table


async def show_plan_summary(
    console: Console, engine: AsyncEngine, campaign: Campaign, now: datetime, settings: Settings
) -> None:
    """The plan per local slot and zone (a dry run: the daemon writes the ledger itself)."""
    outcome = await plan_campaign(engine, campaign, settings, now, write=False)
    for line in summary_lines(outcome.summary, channels=campaign.channels):
        console.print(line, markup=False, highlight=False)


def show_next_steps(console: Console, settings: Settings, campaign_ids: list[str]) -> None:
    db = _database_label(settings)
    example = campaign_ids[0] if campaign_ids else "CAMPAIGN_ID"
    lines = [
        f"database      [cyan]{db}[/cyan]   (open it with: sqlite3 {db})" if settings.sqlite_path else f"database      {db}",
        f"outbox        [cyan]{_rel(settings.outbox_dir)}[/cyan]",
        f"campaigns     [cyan]{_rel(settings.campaigns_dir)}[/cyan]  (drop a YAML file here; the daemon reloads it)",
        "",
        "validate      [bold].venv/bin/topslot validate config/[/bold]",
        f"audience      [bold].venv/bin/topslot audience {example}[/bold]",
        f"plan          [bold].venv/bin/topslot plan {example}[/bold]",
        "run for real  [bold].venv/bin/topslot run[/bold]   (docs/operations.md: systemd, secrets)",
    ]
    console.print(Panel("\n".join(lines), title="what next", border_style="cyan"))


def _database_label(settings: Settings) -> str:
    path = settings.sqlite_path
    return _rel(path) if path else settings.database_url.split("@")[-1]


def _rel(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
