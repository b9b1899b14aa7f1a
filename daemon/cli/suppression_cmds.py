"""``topslot suppressions import | add | remove | export``: the suppression list by hand."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.cli.common import (
    ChannelChoice,
    ConfigOption,
    cli_logger,
    out,
    print_problems,
    progress_bar,
    say,
    settings_or_exit,
    with_engine,
)
from topslot.cli.import_input import EncodingOption, import_file_or_exit
from topslot.clock import SystemClock
from topslot.delivery import SuppressionReason
from topslot.imports.report import ImportReport
from topslot.imports.suppressions import normalise_address
from topslot.store.controls import actor
from topslot.store.suppressions import (
    RECIPIENT_REASONS,
    StoredSuppression,
    add_suppression,
    find_suppression,
    import_suppressions,
    iter_suppressions,
    remove_suppression,
)

suppressions_app = typer.Typer(help="The suppression list: addresses never sent to.", no_args_is_help=True)

EXPORT_COLUMNS = ("channel", "address", "reason", "source", "created_at")


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


def register(app: typer.Typer) -> None:
    app.add_typer(suppressions_app, name="suppressions")


ReasonOption = Annotated[
    SuppressionReason,
    typer.Option("--reason", help="Why these addresses are suppressed (a file's own reason column wins)."),
]
SourceOption = Annotated[
    str | None, typer.Option("--source", metavar="TEXT", help="Where the list came from (kept with each row).")
]


@suppressions_app.command("import")
def suppressions_import(
    file: Annotated[
        Path,
        typer.Argument(help="CSV with an address, email or phone column; a plain list; JSON Lines."),
    ],
    channel: Annotated[
        ChannelChoice | None,
        typer.Option("--channel", help="The channel of rows without one (default: from the column or the address)."),
    ] = None,
    reason: ReasonOption = SuppressionReason.MANUAL,
    source: SourceOption = None,
    config: ConfigOption = Path("config"),
    encoding: EncodingOption = None,
) -> None:
    """Add an unsubscribe list (from topslot or another tool) to the suppressions; bad lines are
    listed and skipped (exit 1), good ones kept; re-importing adds nothing."""
    settings = settings_or_exit(config)
    codec = import_file_or_exit(file, encoding)
    log = cli_logger(settings)

    async def work(engine: AsyncEngine) -> ImportReport:
        with progress_bar(f"suppressions from {file.name}") as advance:
            return await import_suppressions(
                engine,
                file,
                now=SystemClock().now(),
                channel=channel.value if channel else None,
                reason=reason.value,
                source=source or f"import:{file.name}",
                default_country=settings.default_country,
                encoding=codec,
                progress=advance,
            )

    report = with_engine(settings, work)
    print_problems(report.problems)
    table = Table(title=f"suppressions from {file}")
    for column in ("added", "already suppressed", "rejected"):
        table.add_column(column, justify="right")
    table.add_row(str(report.imported), str(report.ignored), str(report.rejected))
    out.print(table)
    log.info(
        "suppressions_imported",
        file=str(file),
        added=report.imported,
        already=report.ignored,
        rejected=report.rejected,
        actor=actor(),
    )
    if not report.ok:
        raise typer.Exit(1)


def _address_or_exit(channel: ChannelChoice, address: str, default_country: str | None) -> str:
    try:
        return normalise_address(channel.value, address, default_country)
    except ValueError as exc:
        say(f"{address}: {exc}")
        raise typer.Exit(2) from None


ChannelRequired = Annotated[ChannelChoice, typer.Option("--channel", help="The address's channel.")]


@suppressions_app.command("add")
def suppressions_add(
    address: Annotated[str, typer.Argument(help="An email address, a phone number or an IM provider:id.")],
    channel: ChannelRequired,
    reason: ReasonOption = SuppressionReason.MANUAL,
    source: SourceOption = None,
    config: ConfigOption = Path("config"),
) -> None:
    """Never send to this address on this channel again (until removed)."""
    settings = settings_or_exit(config)
    clean = _address_or_exit(channel, address, settings.default_country)
    log = cli_logger(settings)
    stored = with_engine(
        settings,
        lambda engine: add_suppression(
            engine, channel.value, clean, reason=reason.value, source=source or "cli", now=SystemClock().now()
        ),
    )
    if stored.reason != reason.value:
        out.print(f"{clean} ({channel.value}): already suppressed ({stored.reason})", markup=False)
    else:
        out.print(f"{clean} ({channel.value}): suppressed ({stored.reason})", markup=False)
    log.info("suppression_added", channel=channel.value, address=clean, reason=stored.reason, actor=actor())


@suppressions_app.command("remove")
def suppressions_remove(
    address: Annotated[str, typer.Argument(help="The suppressed address.")],
    channel: ChannelRequired,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also remove what the recipient asked for (unsubscribe, sms_stop, im_blocked, forgotten).",
        ),
    ] = False,
    config: ConfigOption = Path("config"),
) -> None:
    """Send to this address again. A suppression the recipient asked for needs --force (and their
    new consent, on record); every removal is logged (event ``suppression_removed``)."""
    settings = settings_or_exit(config)
    try:
        clean = normalise_address(channel.value, address, settings.default_country)
    except ValueError:
        clean = address.strip()  # remove whatever was stored, even a spelling no longer accepted
    log = cli_logger(settings)

    async def work(engine: AsyncEngine) -> tuple[StoredSuppression | None, bool]:
        found = await find_suppression(engine, channel.value, clean)
        if found is None:
            return None, False
        if found.reason in RECIPIENT_REASONS and not force:
            return found, False
        return await remove_suppression(engine, channel.value, clean), True

    found, removed = with_engine(settings, work)
    if found is None:
        say(f"{clean} ({channel.value}): not suppressed")
        raise typer.Exit(1)
    if not removed:
        say(
            f"{clean} ({channel.value}): suppressed because of {found.reason} (the recipient's own request); "
            "remove it only with their new consent, using --force"
        )
        raise typer.Exit(1)
    out.print(f"{clean} ({channel.value}): removed (was {found.reason})", markup=False)
    log.info(
        "suppression_removed",
        channel=channel.value,
        address=clean,
        reason=found.reason,
        source=found.source,
        forced=force,
        actor=actor(),
    )


@suppressions_app.command("export")
def suppressions_export(
    channel: Annotated[ChannelChoice | None, typer.Option("--channel", help="Only this channel.")] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv (with a header row) or jsonl.")] = ExportFormat.csv,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")] = None,
    config: ConfigOption = Path("config"),
) -> None:
    """Every suppression (channel, address, reason, source, created_at); ``suppressions import``
    reads the file back."""
    settings = settings_or_exit(config)

    async def work(engine: AsyncEngine) -> int:
        if output is None:
            return await _write(engine, sys.stdout, fmt, channel)
        with output.open("w", encoding="utf-8", newline="") as stream:
            return await _write(engine, stream, fmt, channel)

    count = with_engine(settings, work, read_only=True)
    if output is not None:
        say(f"{count:,} suppressions written to {output}")


async def _write(engine: AsyncEngine, stream: IO[str], fmt: ExportFormat, channel: ChannelChoice | None) -> int:
    count = 0
    writer = csv.writer(stream, lineterminator="\n")
    if fmt is ExportFormat.csv:
        writer.writerow(EXPORT_COLUMNS)
    async for row in iter_suppressions(engine, channel.value if channel else None):
        values = (row.channel, row.address, row.reason, row.source or "", row.created_at.isoformat())
        if fmt is ExportFormat.csv:
            writer.writerow(values)
        else:
            stream.write(json.dumps(dict(zip(EXPORT_COLUMNS, values, strict=True)), ensure_ascii=False) + "\n")
        count += 1
    stream.flush()
    return count
