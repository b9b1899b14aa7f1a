"""``topslot deliveries``: the ledger by state, and resending by hand what was never auto-resent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.cli.common import ConfigOption, out, say, settings_or_exit, with_engine
from daemon.clock import SystemClock
from daemon.store import dispatch, ledger

deliveries_app = typer.Typer(help="The delivery ledger.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(deliveries_app, name="deliveries")


@deliveries_app.command("status")
def status(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    config: ConfigOption = Path("config"),
) -> None:
    """Rows per state (and skip reason) for a campaign."""
    settings = settings_or_exit(config)
    counts = with_engine(settings, lambda engine: ledger.state_counts(engine, campaign_id), read_only=True)
    if not counts:
        say(f"no deliveries for campaign {campaign_id!r}")
        raise typer.Exit(1)
    table = Table(title=f"{campaign_id}: deliveries")
    table.add_column("state")
    table.add_column("reason")
    table.add_column("rows", justify="right")
    for (state, reason), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        table.add_row(state, reason or "", f"{n:,}")
    out.print(table)


@deliveries_app.command("retry")
def retry(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    state: Annotated[
        str, typer.Option("--state", help="unknown (may or may not have been accepted) or failed.")
    ] = "unknown",
    config: ConfigOption = Path("config"),
) -> None:
    """Queue rows for another attempt now: the running daemon picks them up within seconds.

    ``unknown`` rows may already be in the recipient's inbox (the connection dropped after the
    message was sent): retrying them can deliver a second copy. That is why topslot never does it
    by itself."""
    if state not in ("unknown", "failed"):
        say(f"--state: '{state}' cannot be retried; use unknown or failed")
        raise typer.Exit(2)
    settings = settings_or_exit(config)

    async def work(engine: AsyncEngine) -> int:
        return await dispatch.retry_by_hand(engine, campaign_id, state, SystemClock().now())

    n = with_engine(settings, work)
    out.print(f"{n:,} {state} deliveries of {campaign_id} queued for a retry", markup=False)
