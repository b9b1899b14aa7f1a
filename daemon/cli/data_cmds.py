"""``topslot contacts import``, ``topslot events import``, ``topslot audience`` and ``topslot db upgrade``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.cli.common import (
    ConfigOption,
    cli_logger,
    load_campaign_or_exit,
    out,
    print_problems,
    progress_bar,
    say,
    settings_or_exit,
    with_engine,
)
from topslot.cli.import_input import EncodingOption, import_file_or_exit
from topslot.clock import SystemClock
from topslot.imports.fields import instant
from topslot.imports.report import ImportReport
from topslot.store.audience import LEFT_OUT_REASONS, AudienceSummary, audience_summary
from topslot.store.contacts import DEFAULT_BATCH_SIZE, import_contacts
from topslot.store.controls import actor
from topslot.store.events import import_events
from topslot.store.forget import Forgotten, find_contact_id, forget_contact

contacts_app = typer.Typer(help="Contacts: import and update.", no_args_is_help=True)
events_app = typer.Typer(help="Purchase and search history.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(contacts_app, name="contacts")
    app.add_typer(events_app, name="events")
    app.add_typer(db_app, name="db")
    app.command("audience")(audience)


# ---------------------------------------------------------------- plumbing


def _report_import(what: str, report: ImportReport) -> None:
    print_problems(report.problems)
    table = Table(title=what)
    for column in ("imported", "updated", "ignored", "rejected"):
        table.add_column(column, justify="right")
    table.add_row(str(report.imported), str(report.updated), str(report.ignored), str(report.rejected))
    out.print(table)
    if not report.ok:
        raise typer.Exit(1)


# ---------------------------------------------------------------- commands


@contacts_app.command("import")
def contacts_import(
    file: Annotated[Path, typer.Argument(help="CSV (with a header row) or JSON Lines file.")],
    config: ConfigOption = Path("config"),
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per transaction.")] = DEFAULT_BATCH_SIZE,
    encoding: EncodingOption = None,
) -> None:
    """Upsert contacts by external_id; bad rows are listed and skipped (exit 1), good rows are kept."""
    settings = settings_or_exit(config)
    codec = import_file_or_exit(file, encoding)

    async def work(engine: AsyncEngine) -> ImportReport:
        with progress_bar(f"contacts from {file.name}") as advance:
            return await import_contacts(
                engine,
                file,
                now=SystemClock().now(),
                default_country=settings.default_country,
                batch_size=batch_size,
                encoding=codec,
                progress=advance,
            )

    report = with_engine(settings, work)
    _report_import(f"contacts from {file}", report)


@contacts_app.command("forget")
def contacts_forget(
    contact: Annotated[str, typer.Argument(help="The contact's external id (or internal id).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask: erasure cannot be undone.")] = False,
    config: ConfigOption = Path("config"),
) -> None:
    """Erase a contact's personal data (GDPR / PIPL right to erasure): names, addresses, attributes,
    tags, searches and consents go; anonymous rows that reports count stay; its addresses are
    suppressed (reason forgotten) so a re-import never contacts the person again."""
    settings = settings_or_exit(config)
    found = with_engine(settings, lambda engine: find_contact_id(engine, contact))
    if found is None:
        say(f"contact {contact!r} not found")
        raise typer.Exit(1)
    if not yes and not typer.confirm(f"Erase the personal data of contact {contact!r} for good?"):
        raise typer.Exit(1)
    log = cli_logger(settings)
    done = with_engine(settings, lambda engine: forget_contact(engine, contact, SystemClock().now()))
    if done is None:
        say(f"contact {contact!r} not found")
        raise typer.Exit(1)
    _print_forgotten(done)
    log.info(
        "contact_forgotten",
        contact_id=done.contact_id,
        suppressed=done.suppressed,
        events_scrubbed=done.events_scrubbed,
        actor=actor(),
    )


def _print_forgotten(done: Forgotten) -> None:
    out.print(
        f"contact {done.contact_id} forgotten (now {done.external_id}): {done.suppressed} addresses suppressed, "
        f"{done.tags} tags, {done.searches} searches, {done.consents} consents deleted; "
        f"{done.events_scrubbed} events, {done.deliveries_scrubbed} deliveries and "
        f"{done.conversions_scrubbed} conversions scrubbed",
        markup=False,
        highlight=False,
    )


@events_app.command("import")
def events_import(
    file: Annotated[Path, typer.Argument(help="CSV or JSON Lines: type=purchase or type=search rows.")],
    config: ConfigOption = Path("config"),
    encoding: EncodingOption = None,
) -> None:
    """Import purchases and searches; re-importing the same file changes nothing. Amounts are 0 or
    more (refunds are conversions: ``topslot conversions import`` with refund=true)."""
    settings = settings_or_exit(config)
    codec = import_file_or_exit(file, encoding)

    async def work(engine: AsyncEngine) -> ImportReport:
        with progress_bar(f"events from {file.name}") as advance:
            return await import_events(engine, file, encoding=codec, progress=advance)

    report = with_engine(settings, work)
    _report_import(f"events from {file}", report)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = Path("config")) -> None:
    """Create the database if need be and apply its migrations (also done before every command that
    writes to it; commands that only read need it up to date and tell you to run this)."""
    settings = settings_or_exit(config)

    async def done(_engine: AsyncEngine) -> None:
        return None

    with_engine(settings, done)
    out.print("database is up to date", markup=False)


def audience(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    config: ConfigOption = Path("config"),
    at: Annotated[
        str | None, typer.Option("--at", help="Evaluate the segment at this ISO 8601 instant (default: now).")
    ] = None,
) -> None:
    """How many contacts a campaign reaches per channel, and why the others are left out."""
    settings = settings_or_exit(config)
    campaign = load_campaign_or_exit(settings, campaign_id)
    try:
        now = instant(at, "--at") if at else SystemClock().now()
    except ValueError as exc:
        say(str(exc))
        raise typer.Exit(2) from None
    summary = with_engine(settings, lambda engine: audience_summary(engine, campaign, now), read_only=True)
    _print_audience(summary, now)


def _print_audience(summary: AudienceSummary, now: datetime) -> None:
    table = Table(title=f"{summary.campaign_id}: {summary.segment} contacts in the segment at {now.isoformat()}")
    table.add_column("channel")
    table.add_column("eligible", justify="right")
    for reason in LEFT_OUT_REASONS:
        table.add_column(reason.replace("_", " "), justify="right")
    for channel, counts in summary.channels.items():
        table.add_row(channel, str(counts.eligible), *(str(counts.left_out[r]) for r in LEFT_OUT_REASONS))
    out.print(table)
