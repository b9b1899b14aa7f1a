"""``topslot demo``: the newcomer's tour on embedded defaults (SQLite under var/, the example config).

Steps: database + migrations → validate the example campaigns → import the example contacts and
events → audience and plan summaries → start the daemon (and its tracking server) → send, bucket by
bucket, on a clock that jumps → simulated recipients open, click, unsubscribe and buy over real
HTTP (``topslot.runtime.demo_recipients``) → the report table and var/demo/report.html → stop
(unless kept running) → what next.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from datetime import UTC, datetime, time, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.windows import campaign_window
from topslot.campaign import Campaign
from topslot.channel import SPECS
from topslot.clock import FakeClock
from topslot.config import LoadResult
from topslot.imports.report import ImportReport
from topslot.planning import DispatchWindow, summary_lines
from topslot.reporting.data import ReportQuery, build_report
from topslot.reporting.render_html import render_html
from topslot.reporting.render_table import render_table
from topslot.runtime import demo_recipients, ports
from topslot.runtime.database_lock import hold_database
from topslot.runtime.service import Daemon
from topslot.scheduling.plan_run import plan_campaign
from topslot.settings import Settings
from topslot.store import ledger
from topslot.store.audience import AudienceSummary, audience_summary
from topslot.store.contacts import import_contacts
from topslot.store.db import display_url, prepare_database
from topslot.store.events import import_events

BUCKET_TIMEOUT_S = 60
PAUSE_S = 0.4  # between buckets, so the tour can be followed


def demo_settings(settings: Settings, *, keep_running: bool = False) -> Settings:
    """The tour's own corner of var/ (database and outbox), so it never touches a real one.

    Unless kept running, its tracking server listens on a free loopback port (8080 may be taken:
    links still name ``tracking_base_url``, the simulated recipients go to the real port), and the
    conversion webhook gets a key of its own when none is configured."""
    root = settings.var_dir / "demo"
    update: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{root / 'topslot.db'}",
        "outbox_dir": root / "outbox",
        "log_format": "console",
        "log_level": "warning",  # the tour prints its own progress; warnings still show
    }
    if not keep_running:
        update.update(tracking_host="127.0.0.1", tracking_port=0)
    if settings.conversion_webhook_key is None:
        update["conversion_webhook_key"] = SecretStr(secrets.token_urlsafe(24))
    return settings.model_copy(update=update)


async def run_demo(settings: Settings, console: Console, *, keep_running: bool = False, pause: float = PAUSE_S) -> int:
    """Run the tour; returns the exit code (0: the example campaign was planned and sent)."""
    settings = demo_settings(settings, keep_running=keep_running)
    with hold_database(settings.database_url) as lock:  # another tour running here stops this one (DatabaseInUse)
        return await _tour(settings, console, keep_running, pause, lock)


async def _tour(settings: Settings, console: Console, keep_running: bool, pause: float, lock: Path | None) -> int:
    root = settings.var_dir / "demo"
    _clear(root, keep=lock)  # a fresh tour each time
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    console.print(
        Panel.fit(
            "[bold]topslot demo[/bold] — every message lands just before 07:30 or 17:00 in the recipient's "
            "own time zone.\nEverything below runs on embedded defaults: SQLite and the outbox in "
            f"[cyan]{_rel(root)}[/cyan], config in [cyan]{_rel(settings.config_dir)}[/cyan].",
            border_style="green",
        )
    )
    loaded = ports.load_campaigns(settings.campaigns_dir, settings.templates_dir, settings)
    if not loaded.campaigns:
        show_campaigns(console, loaded)
        return 1
    # The tour happens the day before the earliest campaign starts (recipients' local dates run ahead
    # of UTC in the east, so a day earlier still catches everybody's first slot).
    first_day = min(c.schedule.start for c in loaded.campaigns.values())
    now = datetime.combine(first_day - timedelta(days=2), time(12, 0), tzinfo=UTC)

    console.rule("1. database")
    engine = await prepare_database(settings.database_url)
    try:
        console.print(f"schema up to date in [cyan]{_database_label(settings)}[/cyan]")

        console.rule("2. campaigns")
        show_campaigns(console, loaded)

        console.rule("3. example data")
        await import_example_data(console, engine, settings, now)

        console.rule("4. audiences")
        for campaign in loaded.campaigns.values():
            await show_audience(console, engine, campaign, now)

        console.rule(f"5. plan (as of {now:%Y-%m-%d %H:%M} UTC)")
        windows = []
        for campaign in loaded.campaigns.values():
            windows += await show_plan_summary(console, engine, campaign, now, settings)
    finally:
        await engine.dispose()
    if not windows:
        console.print("[yellow]nothing to send[/yellow]")
        return 1

    start = min(w.start_utc for w in windows) - timedelta(minutes=2)
    clock = FakeClock(start)
    console.rule(f"6. sending: the clock jumps from bucket to bucket, starting {start:%Y-%m-%d %H:%M} UTC")
    console.print(
        "The daemon plans every recipient into the ledger and sets a timer per bucket (one channel's\n"
        "messages due at one instant). The tour moves the clock to each bucket's dispatch start, a minute\n"
        "before its slot, and the daemon hands the messages to the outbox, just as it would on the day.",
        highlight=False,
    )
    if settings.dispatch_processes > 1:
        console.print(f"Each bucket is claimed and sent by {settings.dispatch_processes} processes side by side.")
    daemon = Daemon(settings, clock=clock, log_stream=console.file, handle_signals=keep_running)
    async with daemon:
        await play_buckets(console, daemon, clock, pause)
        show_outbox(console, settings)
        await simulate_recipients(console, daemon, clock, loaded, settings)
        await show_reports(console, daemon, clock, loaded, root)
        if keep_running:
            console.print("running — edit a campaign file to see it reloaded; Ctrl-C to stop")
            await daemon.wait_stopped()
    show_next_steps(console, settings, sorted(loaded.campaigns))
    return 0 if not loaded.problems else 1


def _clear(root: Path, *, keep: Path | None) -> None:
    """Empty ``root`` but for ``keep`` (the daemon lock this tour holds: a new file would not be locked)."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if keep is not None and path.name == keep.name:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


async def play_buckets(console: Console, daemon: Daemon, clock: FakeClock, pause: float) -> None:
    """Move the clock to each bucket's dispatch start; the daemon's own timers fire it; wait until
    it is sent, then print what went out."""
    assert daemon.scheduler is not None
    buckets = await ledger.planned_buckets(daemon.engine)
    for start in sorted({b.dispatch_start_utc for b in buckets}):
        clock.set(start)
        await daemon.scheduler.rebuild_jobs()  # timers are set on the clock: a jump needs new ones
        deadline = asyncio.get_running_loop().time() + BUCKET_TIMEOUT_S
        while await ledger.pending_until(daemon.engine, start):
            if asyncio.get_running_loop().time() > deadline:
                console.print("[yellow]stopped waiting: a bucket is still pending[/yellow]")
                return
            await asyncio.sleep(0.05)
        due = sorted({b.due_utc for b in buckets if b.dispatch_start_utc == start})
        sent = ", ".join(f"{b.channel} {b.count}" for b in buckets if b.dispatch_start_utc == start)
        totals = ", ".join(f"{state} {n}" for state, n in sorted((await ledger.state_totals(daemon.engine)).items()))
        console.print(
            f"{start:%Y-%m-%d %H:%M} UTC  bucket due {due[0]:%H:%M} UTC: {sent}   ledger: {totals}",
            markup=False,
            highlight=False,
        )
        await asyncio.sleep(pause)


def show_outbox(console: Console, settings: Settings) -> None:
    outbox = settings.outbox_dir
    assert outbox is not None
    emails = sorted((outbox / "new").glob("*")) if (outbox / "new").is_dir() else []
    console.rule("7. outbox")
    console.print(f"{len(emails)} email(s) in [cyan]{_rel(outbox / 'new')}[/cyan]")
    if emails:
        message = BytesParser(policy=policy.default).parsebytes(emails[0].read_bytes())
        for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"):
            console.print(f"  {name}: {message[name]}", markup=False, highlight=False)
        body = message.get_body(("plain",))
        if body is not None:
            for line in body.get_content().strip().splitlines()[:12]:
                console.print(f"  | {line}", markup=False, highlight=False)
    for channel, spec in SPECS.items():
        path = outbox / f"{channel}.jsonl"  # the text outboxes (topslot.channels.outbox)
        if not spec.mime and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            console.print(f"{spec.count(len(lines))} in [cyan]{_rel(path)}[/cyan]")
            if lines:
                console.print("  " + lines[0], markup=False, highlight=False)


async def simulate_recipients(
    console: Console, daemon: Daemon, clock: FakeClock, loaded: LoadResult, settings: Settings
) -> None:
    """Step 8: simulated people and machines react to the outbox, over HTTP, against the daemon's
    own tracking server and conversion webhook (loopback only; seeded, so every tour is the same)."""
    assert daemon.tracking is not None and settings.outbox_dir is not None
    console.rule("8. simulated recipients (not real people: a seeded script, over HTTP on 127.0.0.1)")
    campaign = min(loaded.campaigns.values(), key=lambda c: c.id)
    prefix = campaign.coupon.generate.prefix if campaign.coupon and campaign.coupon.generate else None
    received = demo_recipients.read_outbox(settings.outbox_dir, prefix)
    key = settings.conversion_webhook_key
    assert key is not None
    url = daemon.tracking.url
    console.print(
        f"Simulated recipients fetch the tracked links of {len(received)} message(s) from the tracking server "
        f"at {url}: browsers and Apple-MPP-like proxies load the pixel, a link scanner sends HEADs, people "
        "click, some register on the landing page, one mail client posts a one-click unsubscribe (RFC 8058); "
        "then the shop posts the signups, orders with their coupon codes and product categories, and a refund, "
        "to the signed webhook POST /conversions.",
        highlight=False,
    )
    played = await demo_recipients.play(url, received, clock, key.get_secret_value(), campaign.costs.currency)
    await daemon.tracking.buffer.flush()  # every hit written (and labelled) before the report
    console.print(
        f"simulated: {played.human_opens} human open(s), {played.machine_opens} machine open(s) (Apple MPP), "
        f"{played.scanner_hits} scanner check(s), {played.clicks} click(s), {played.unsubscribes} unsubscribe(s), "
        f"{played.signups} signup(s), {played.orders} order(s) and {played.refunds} refund "
        f"({played.recorded} conversion(s) recorded)",
        markup=False,
        highlight=False,
    )
    for problem in played.failed:
        console.print(f"[yellow]unexpected answer: {problem}[/yellow]")


async def show_reports(console: Console, daemon: Daemon, clock: FakeClock, loaded: LoadResult, root: Path) -> None:
    """Step 9: the report every campaign gets (``topslot report``), as a table and as HTML."""
    assert daemon.engine is not None
    for cid, campaign in sorted(loaded.campaigns.items()):
        console.rule(f"9. report: {cid} (opens, clicks and sales above were simulated)")
        query = ReportQuery(cid, "channel", None, campaign_window(campaign), campaign.costs, campaign.slot_choice)
        table = await build_report(daemon.engine, query, clock.now(), name=campaign.name)
        console.print(render_table(table))
        html = await build_report(daemon.engine, query, clock.now(), name=campaign.name, charts=True)
        path = root / ("report.html" if len(loaded.campaigns) == 1 else f"report-{cid}.html")
        path.write_text(render_html(html), encoding="utf-8")
        console.print(f"HTML report: [cyan]{_rel(path)}[/cyan]   (open it in a browser)")


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
) -> list[DispatchWindow]:
    """The plan per local slot and zone (a dry run: the daemon writes the ledger itself)."""
    outcome = await plan_campaign(engine, campaign, settings, now, write=False)
    for line in summary_lines(outcome.summary, channels=campaign.channels):
        console.print(line, markup=False, highlight=False)
    return outcome.summary.windows


def show_next_steps(console: Console, settings: Settings, campaign_ids: list[str]) -> None:
    db = _database_label(settings)
    example = campaign_ids[0] if campaign_ids else "CAMPAIGN_ID"
    topslot = ".venv/bin/topslot" if Path(".venv/bin/topslot").exists() else "topslot"  # a clone, or installed
    lines = [
        f"working dir   [cyan]{Path.cwd()}[/cyan]   (the paths and commands below are relative to it)",
        f"database      [cyan]{db}[/cyan]   (open it with: sqlite3 {db})"
        if settings.sqlite_path
        else f"database      {db}",
        f"outbox        [cyan]{_rel(settings.outbox_dir)}[/cyan]   (.eml files: open them in any mail client)",
        f"campaigns     [cyan]{_rel(settings.campaigns_dir)}[/cyan]  (drop a YAML file here; the daemon reloads it)",
        "",
        f"validate      [bold]{topslot} validate config/[/bold]",
        f"the tour's database, for the commands below:  [bold]export TOPSLOT_DATABASE_URL=sqlite+aiosqlite:///{_rel(settings.sqlite_path)}[/bold]",
        f"audience      [bold]{topslot} audience {example}[/bold]",
        f"plan          [bold]{topslot} plan {example} --from 2027-05-01T00:00Z[/bold]",
        f"ledger        [bold]{topslot} deliveries status {example}[/bold]",
        f"report        [bold]{topslot} report {example} --format html -o report.html[/bold]",
        f"run for real  [bold]{topslot} run[/bold]   (docs/operations.md: systemd, secrets)",
    ]
    console.print(Panel("\n".join(lines), title="what next", border_style="cyan"))


def _database_label(settings: Settings) -> str:
    path = settings.sqlite_path
    return _rel(path) if path else display_url(settings.database_url)


def _rel(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
