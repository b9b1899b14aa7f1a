"""``topslot demo``: the newcomer's tour on embedded defaults (SQLite under var/, the example config).

Steps: database + migrations → validate the example campaigns → import the example contacts and
events → audience and plan summaries → start the daemon → stop (unless kept running) → what next.
Each step is a small function so later issues can add one (sending to var/outbox on a simulated clock).
"""

from __future__ import annotations

import inspect
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from daemon.campaign import Campaign
from daemon.runtime import ports
from daemon.runtime.service import Daemon
from daemon.settings import Settings


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def run_demo(settings: Settings, console: Console, now: datetime, keep_running: bool = False) -> int:
    """Run the tour; returns the exit code (0: all steps shown)."""
    console.print(
        Panel.fit(
            "[bold]topslot demo[/bold] — every message lands just before 07:30 or 17:00 in the recipient's "
            "own time zone.\nEverything below runs on embedded defaults: SQLite in "
            f"[cyan]{_rel(settings.var_dir)}[/cyan], config in [cyan]{_rel(settings.config_dir)}[/cyan].",
            border_style="green",
        )
    )
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]

    console.rule("1. database")
    engine = await ports.open_database(settings.database_url)
    try:
        console.print(f"schema up to date in [cyan]{_database_label(settings)}[/cyan]")

        console.rule("2. campaigns")
        loaded = ports.load_campaigns(settings.campaigns_dir, settings.templates_dir)
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
    daemon = Daemon(readable, log_stream=console.file, handle_signals=keep_running)
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


def show_campaigns(console: Console, loaded: ports.CampaignLoad) -> None:
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


async def import_example_data(console: Console, engine: Any, settings: Settings, now: datetime) -> None:
    """Import config/example/contacts.csv then events.csv (re-running is safe: contacts upsert, events dedupe)."""
    example = settings.config_dir / "example"
    contacts, events = example / "contacts.csv", example / "events.csv"
    if contacts.is_file():
        import_contacts = ports.store_or_config_function("daemon.store", "import_contacts", ("contacts",))
        report = await import_contacts(engine, contacts, now=now, default_country=settings.default_country)
        _show_import(console, "contacts", contacts, report)
    else:
        console.print(f"[yellow]no {_rel(contacts)} — skipped[/yellow]")
    if events.is_file():
        import_events = ports.store_or_config_function("daemon.store", "import_events", ("events",))
        _show_import(console, "events", events, await import_events(engine, events))
    else:
        console.print(f"[yellow]no {_rel(events)} — skipped[/yellow]")


def _show_import(console: Console, kind: str, path: Path, report: Any) -> None:
    counts = [
        f"{getattr(report, name)} {name}"
        for name in ("imported", "updated", "ignored", "rejected")
        if isinstance(getattr(report, name, None), int)
    ]
    console.print(f"{kind}: {', '.join(counts)} from [cyan]{_rel(path)}[/cyan]")
    for problem in getattr(report, "problems", [])[:10]:
        console.print(f"  [yellow]{problem}[/yellow]", markup=True, highlight=False)


async def show_audience(console: Console, engine: Any, campaign: Campaign, now: datetime) -> None:
    try:
        audience_summary = ports.store_or_config_function("daemon.store", "audience_summary", ("audience",))
    except ImportError:
        console.print(f"[yellow]{campaign.id}: audience summary not available in this build[/yellow]")
        return
    summary = await _maybe_await(audience_summary(engine, campaign, now))
    console.print(audience_table(campaign, summary))


def audience_table(campaign: Campaign, summary: Any) -> Table:
    """Per channel: who gets it, and how many were left out and why."""
    channels = getattr(summary, "channels", {}) or {}
    reasons = sorted({reason for ch in channels.values() for reason in getattr(ch, "left_out", {})})
    table = Table(title=f"{campaign.id}: {getattr(summary, 'segment', '?')} contact(s) in the segment")
    table.add_column("channel")
    table.add_column("eligible", justify="right")
    for reason in reasons:
        table.add_column(reason.replace("_", " "), justify="right")
    for name, ch in channels.items():
        left_out = getattr(ch, "left_out", {})
        table.add_row(name, str(getattr(ch, "eligible", "?")), *(str(left_out.get(r, 0)) for r in reasons))
    return table


async def show_plan_summary(
    console: Console, engine: Any, campaign: Campaign, now: datetime, settings: Settings | None = None
) -> None:
    """The plan per bucket, from ``daemon.planning.plan_summary(engine, campaign, now[, settings=])``.

    Its result may be text, a list of lines or any rich renderable. Until planning offers that
    function the step says so and the tour goes on.
    """
    try:
        summarise = ports.store_or_config_function("daemon.planning", "plan_summary", ("summary", "service"))
    except ImportError:
        console.print(f"[yellow]{campaign.id}: plan summary not available in this build[/yellow]")
        return
    kwargs = {"settings": settings} if "settings" in inspect.signature(summarise).parameters else {}
    summary = await _maybe_await(summarise(engine, campaign, now, **kwargs))
    if isinstance(summary, list | tuple):
        for line in summary:
            console.print(line, markup=False, highlight=False)
    else:
        console.print(summary)


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
