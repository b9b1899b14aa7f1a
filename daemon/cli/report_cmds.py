"""``topslot report``: what a campaign sent, what people did, what it earned, and whether it paid."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.windows import campaign_window
from topslot.campaign import Campaign, Costs
from topslot.cli.common import ConfigOption, out, print_problems, say, settings_or_exit, with_engine
from topslot.clock import SystemClock
from topslot.config import load_campaigns
from topslot.errors import InvalidInput
from topslot.reporting.data import ReportQuery, build_report, campaign_name
from topslot.reporting.model import DIMENSIONS, Report
from topslot.reporting.render_csv import render_csv, render_overview_csv, render_slots_csv
from topslot.reporting.render_html import render_html, render_overview_html
from topslot.reporting.render_json import render_json, render_overview_json, render_slots_json
from topslot.reporting.render_slots_table import overview_tables, slot_tables
from topslot.reporting.render_table import render_table
from topslot.reporting.segments import load_segments
from topslot.reporting.slot_data import build_slot_overview
from topslot.reporting.slots import SlotOverview
from topslot.settings import Settings

FORMATS = ("table", "json", "csv", "html")


class ReportBy(StrEnum):
    channel = "channel"
    slot = "slot"
    segment = "segment"
    timezone = "timezone"
    domain = "domain"


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    html = "html"


assert tuple(ReportBy) == DIMENSIONS and tuple(ReportFormat) == FORMATS


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    campaign_id: Annotated[
        str | None, typer.Argument(help="The campaign's id (leave it out with --all-campaigns).")
    ] = None,
    by: Annotated[
        ReportBy, typer.Option("--by", help="Group by channel, slot, segment, timezone or email domain.")
    ] = ReportBy.channel,
    format_: Annotated[ReportFormat, typer.Option("--format", help="table, json, csv or html.")] = ReportFormat.table,
    segments: Annotated[
        Path | None,
        typer.Option("--segments", help="YAML file of named segments (name: condition) for --by segment."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    slots: Annotated[
        bool,
        typer.Option("--slots", help="Only the slot comparison (table, json or csv; the HTML page always has it)."),
    ] = False,
    all_campaigns: Annotated[
        bool,
        typer.Option("--all-campaigns", help="The slot comparison of every campaign in the ledger, then pooled."),
    ] = False,
    config: ConfigOption = Path("config"),
) -> None:
    """Deliveries, opens and clicks (people and machines), unsubscribes, sales, ROI and the lift
    against the holdout, per channel, slot, segment or time zone, and the slot comparison with 95 %
    intervals (randomised slots apart from observational ones). Read-only."""
    if all_campaigns:
        if campaign_id is not None or by != "channel" or segments is not None:
            say("--all-campaigns compares the slots of every campaign: leave out CAMPAIGN_ID, --by and --segments")
            raise typer.Exit(2)
    elif campaign_id is None:
        say("name a campaign (CAMPAIGN_ID), or compare the slots of all of them with --all-campaigns")
        raise typer.Exit(2)
    if by not in DIMENSIONS:
        say(f"--by: '{by}' is not one of {', '.join(DIMENSIONS)}")
        raise typer.Exit(2)
    if format_ not in FORMATS:
        say(f"--format: '{format_}' is not one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    if slots and format_ == "html" and not all_campaigns:
        say("--slots: the HTML report always has the slot comparison; leave --slots out")
        raise typer.Exit(2)
    if segments is not None and by != "segment":
        say("--segments only applies with --by segment")
        raise typer.Exit(2)
    named = None
    if segments is not None:
        try:
            named = load_segments(segments)
        except InvalidInput as exc:
            print_problems(exc.problems)
            raise typer.Exit(2) from None
    settings = settings_or_exit(config)
    loaded = load_campaigns(settings.campaigns_dir, settings.templates_dir).campaigns
    now = SystemClock().now()
    if campaign_id is None:
        _all_campaigns(settings, loaded, now, format_, output)
        return
    cid: str = campaign_id
    campaign = loaded.get(cid)

    async def work(engine: AsyncEngine) -> Report | None:
        stored_name = await campaign_name(engine, cid)
        if campaign is None and stored_name is None:
            return None
        notes = []
        if campaign is not None:
            window = campaign_window(campaign)
            query = ReportQuery(cid, by, named, window, campaign.costs, campaign.slot_choice)
        else:
            query = ReportQuery(cid, by, named)
            notes.append(
                "the campaign file is not loaded: send and fixed costs count as 0; without a margin, "
                "gross profit and ROI are n/a"
            )
        built = await build_report(
            engine, query, now, name=campaign.name if campaign else stored_name, charts=format_ == "html"
        )
        built.notes.extend(notes)
        return built

    built = with_engine(settings, work, read_only=True)
    if built is None:
        say(f"campaign {campaign_id!r} is neither loaded from {settings.campaigns_dir} nor in the database")
        raise typer.Exit(1)
    if slots and format_ == "csv" and built.slots is not None and built.slots.summary:
        say(built.slots.summary)  # the CSV is its header alone
    if format_ == "table":
        renderable: Any = Group(*slot_tables(built.slots)) if slots else render_table(built)
        _write(renderable, output)
    else:
        renderers = {"json": render_json, "csv": render_csv, "html": render_html}
        if slots:
            renderers = {"json": render_slots_json, "csv": render_slots_csv}
        _write(renderers[format_](built), output)


def _all_campaigns(
    settings: Settings, loaded: Mapping[str, Campaign], now: datetime, format_: str, output: Path | None
) -> None:
    """``--all-campaigns``: every campaign with recipients in the ledger, then all of them pooled."""
    known = {cid: (c.costs.currency, c.slot_choice) for cid, c in loaded.items()}

    async def work(engine: AsyncEngine) -> SlotOverview:
        return await build_slot_overview(engine, known, now, Costs().currency)

    built = with_engine(settings, work, read_only=True)
    if format_ == "csv" and built.overall.summary:
        say(built.overall.summary)
    if format_ == "table":
        _write(Group(*overview_tables(built)), output)
    else:
        renderers = {"json": render_overview_json, "csv": render_overview_csv, "html": render_overview_html}
        _write(renderers[format_](built), output)


FILE_WIDTH = 100  # a table written to a file (-o); on a terminal, the terminal's width (80 when not a tty)


def _write(content: Any, output: Path | None) -> None:
    """A rich renderable (table) or text to stdout or ``output``; an unwritable ``output`` is one line.
    Tables fit the width they are printed at (``topslot.reporting.render_fit``)."""
    try:
        if output is None:
            if isinstance(content, str):
                sys.stdout.write(content)
            else:
                out.print(content)
            return
        if isinstance(content, str):
            output.write_text(content, encoding="utf-8")
        else:
            from rich.console import Console

            with output.open("w", encoding="utf-8") as handle:
                Console(file=handle, width=FILE_WIDTH, color_system=None).print(content)
    except OSError as exc:  # --output in a missing or unwritable place
        if output is None:
            raise
        say(f"--output: cannot write {output}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    say(f"wrote {output}")
