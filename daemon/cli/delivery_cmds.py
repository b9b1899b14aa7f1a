"""``topslot deliveries``: the ledger by state, and resending by hand what was never auto-resent."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.channel import OUTBOX_PROVIDER
from topslot.cli.common import ConfigOption, out, say, settings_or_exit, with_engine
from topslot.clock import SystemClock
from topslot.delivery import DeliveryState as S
from topslot.store import dispatch, ledger

OUTBOX_LABEL = "outbox write (not sent)"
deliveries_app = typer.Typer(help="The delivery ledger.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(deliveries_app, name="deliveries")


@deliveries_app.command("status")
def status(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    config: ConfigOption = Path("config"),
) -> None:
    """Rows per channel and state for a campaign: who took them (``outbox``: written to files, not
    sent, not charged) or why they were skipped."""
    settings = settings_or_exit(config)
    rows = with_engine(settings, lambda engine: ledger.status_rows(engine, campaign_id), read_only=True)
    if not rows:
        say(f"no deliveries for campaign {campaign_id!r}")
        raise typer.Exit(1)
    table = Table(title=f"{campaign_id}: deliveries")
    for column in ("channel", "state", "via / reason"):
        table.add_column(column)
    table.add_column("rows", justify="right")
    for r in rows:
        via = OUTBOX_LABEL if r.provider == OUTBOX_PROVIDER else r.provider
        table.add_row(r.channel, r.state, r.reason or via or "", f"{r.rows:,}")
    out.print(table)


class RetryState(StrEnum):
    unknown = S.UNKNOWN.value
    failed = S.FAILED.value


@deliveries_app.command("retry")
def retry(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    state: Annotated[
        RetryState, typer.Option("--state", help="unknown (may or may not have been accepted) or failed.")
    ] = RetryState.unknown,
    config: ConfigOption = Path("config"),
) -> None:
    """Queue rows for another attempt now: the running daemon picks them up within seconds.

    ``unknown`` rows may already be in the recipient's inbox (the connection dropped after the
    message was sent): retrying them can deliver a second copy. That is why topslot never does it
    by itself."""
    settings = settings_or_exit(config)

    async def work(engine: AsyncEngine) -> int:
        return await dispatch.retry_by_hand(engine, campaign_id, S(state.value), SystemClock().now())

    n = with_engine(settings, work)
    out.print(f"{n:,} {state} deliveries of {campaign_id} queued for a retry", markup=False)
