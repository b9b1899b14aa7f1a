"""``topslot plan``: when each recipient's message will go, per local slot and zone (a dry run)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.cli.common import ConfigOption, load_campaign_or_exit, out, say, settings_or_exit, with_engine
from daemon.clock import SystemClock
from daemon.planning import dispatch_starts, jsonl_lines, summary_lines
from daemon.scheduling.plan_run import PlanOutcome, plan_campaign


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        say(f"--from: '{text}' is not an ISO 8601 date or instant, e.g. 2027-05-05T12:00Z")
        raise typer.Exit(2) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def plan(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    config: ConfigOption = Path("config"),
    from_: Annotated[
        str | None, typer.Option("--from", help="Plan as if it were this instant (ISO 8601; UTC unless an offset is given).")
    ] = None,
    days: Annotated[int | None, typer.Option("--days", min=1, help="Only slots due within N days.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per planned delivery per line.")] = False,
) -> None:
    """Show the send plan: per local slot and zone, the UTC instant, dispatch start and recipients per
    channel, who is left out and why, and warnings for buckets that cannot arrive in their window.
    Nothing is written: the running daemon keeps the ledger."""
    settings = settings_or_exit(config)
    campaign = load_campaign_or_exit(settings, campaign_id)
    now = _instant(from_) if from_ else SystemClock().now()

    if not as_json:
        outcome = with_engine(
            settings,
            lambda engine: plan_campaign(engine, campaign, settings, now, write=False, days=days),
            read_only=True,
        )
        _print_summary(outcome, campaign.channels, now, days)
        return

    async def json_lines(engine: AsyncEngine) -> None:
        # Dispatch starts depend on bucket sizes: count first, then plan again (deterministic) and print.
        counted = await plan_campaign(engine, campaign, settings, now, write=False, days=days)
        starts = dispatch_starts(counted.summary.windows)

        def emit(rows: list[dict[str, Any]]) -> None:
            for line in jsonl_lines(rows, starts):
                sys.stdout.write(line + "\n")

        await plan_campaign(engine, campaign, settings, now, write=False, days=days, rows_out=emit)

    with_engine(settings, json_lines, read_only=True)


def _print_summary(outcome: PlanOutcome, channels: list[str], now: datetime, days: int | None) -> None:
    window = f" to {(now + timedelta(days=days)).isoformat()}" if days else ""
    out.print(f"plan for {outcome.campaign_id} as of {now.isoformat()}{window}", markup=False, highlight=False)
    audience = outcome.audience
    eligible = ", ".join(f"{ch} {audience.channels[ch].eligible:,}" for ch in channels if ch in audience.channels)
    out.print(f"segment: {audience.segment:,} contact(s); eligible: {eligible}", markup=False, highlight=False)
    for line in summary_lines(outcome.summary, channels=channels):
        style = "yellow" if line.startswith("warning:") else None
        out.print(line, markup=False, highlight=False, style=style, soft_wrap=True)
    if outcome.coupons is not None:
        style = None if outcome.coupons.ok else "yellow"
        prefix = "coupons: " if outcome.coupons.ok else "warning: coupons: "
        out.print(prefix + outcome.coupons.message, markup=False, highlight=False, style=style, soft_wrap=True)
    if not outcome.summary.buckets:
        out.print("nothing to send in this window", markup=False)
