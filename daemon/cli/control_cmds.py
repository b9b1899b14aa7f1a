"""``topslot status`` and ``topslot campaigns list | pause | resume | cancel``: all from and to the
database, so they work while daemons run (they notice a control within seconds) and on any node."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign_version import SHORT
from topslot.cli.common import ConfigOption, out, say, settings_or_exit, with_engine
from topslot.clock import SystemClock
from topslot.store import controls, status
from topslot.store.controls import Control, ControlRefused

campaigns_app = typer.Typer(help="Campaigns in the database: list, pause, resume, cancel.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="JSON for machines instead of tables.")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (kept with the control, shown by status).")]
CampaignArg = Annotated[str, typer.Argument(help="The campaign's id.")]
IN_FLIGHT_STATES = ("claimed", "sending")
SUMMARY_STATES = ("planned", "claimed", "sending", "retry_wait", "sent", "delivered", "bounced", "failed", "unknown",
                  "skipped")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("status")(status_cmd)
    app.add_typer(campaigns_app, name="campaigns")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(_jsonable(value)))


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _rows(counts: dict[str, int]) -> str:
    shown = [f"{state} {counts[state]:,}" for state in SUMMARY_STATES if counts.get(state)]
    return ", ".join(shown) or "no rows"


def _next(row: status.CampaignRow) -> str:
    return "; ".join(f"{_when(b.due_utc)} {b.channel} ({b.rows:,})" for b in row.next_buckets) or "none planned"


def _version(row: status.CampaignRow) -> str:
    """The version in force, then each running process holding another one (it holds back)."""
    lines = [row.version[:SHORT]] + [f"{h.owner} holds {h.version[:SHORT]}" for h in row.other_versions]
    return "\n".join(lines)


def _state(row: status.CampaignRow) -> str:
    if row.since is None:
        return str(row.state)
    reason = f": {row.reason}" if row.reason else ""
    return f"{row.state} since {_when(row.since)}{reason}"


# ---------------------------------------------------------------- topslot campaigns


@campaigns_app.command("list")
def list_cmd(config: ConfigOption = Path("config"), as_json: JsonOption = False) -> None:
    """Every campaign in the database: its state (active, paused, cancelled), the version in force
    (and any running process holding another), rows per state and its next planned buckets."""
    settings = settings_or_exit(config)
    now = SystemClock().now()
    rows = with_engine(
        settings,
        lambda engine: status.campaign_rows(engine, now, dead_after=timedelta(seconds=settings.node_timeout_s)),
        read_only=True,
    )
    if as_json:
        _print_json(rows)
        return
    if not rows:
        say("no campaigns in the database yet (the daemon records a campaign when it first plans it)")
        return
    table = Table(title="campaigns")
    for column in ("id", "name", "state", "version", "rows", "next buckets (due, channel, rows)"):
        table.add_column(column, no_wrap=column == "version")
    for r in rows:
        table.add_row(r.id, r.name, _state(r), _version(r), _rows(r.rows), _next(r))
    out.print(table)


def _control(config: Path, campaign_id: str, verb: str, reason: str | None) -> Control:
    settings = settings_or_exit(config)
    action = {"pause": controls.pause, "resume": controls.resume, "cancel": controls.cancel}[verb]

    async def work(engine: AsyncEngine) -> Control | str:
        try:
            return await action(engine, campaign_id, now=SystemClock().now(), reason=reason)
        except ControlRefused as exc:
            return str(exc)

    result = with_engine(settings, work)
    if isinstance(result, str):
        say(result)
        raise typer.Exit(1)
    return result


@campaigns_app.command("pause")
def pause_cmd(campaign_id: CampaignArg, reason: ReasonOption = None, config: ConfigOption = Path("config")) -> None:
    """Stop claiming the campaign's rows on every node (within one claim batch); they stay planned.
    Survives restarts; ``resume`` undoes it."""
    result = _control(config, campaign_id, "pause", reason)
    word = "paused" if result.changed else "already paused"
    out.print(f"{campaign_id}: {word}; its planned rows wait for resume", markup=False)


@campaigns_app.command("resume")
def resume_cmd(campaign_id: CampaignArg, reason: ReasonOption = None, config: ConfigOption = Path("config")) -> None:
    """Claim the campaign's rows again. A running daemon re-plans it at once: buckets whose slot
    passed while paused follow the campaign's missed-slot rules (sent within the grace, else skipped)."""
    result = _control(config, campaign_id, "resume", reason)
    word = "resumed" if result.changed else "not paused"
    out.print(f"{campaign_id}: {word}", markup=False)


@campaigns_app.command("cancel")
def cancel_cmd(
    campaign_id: CampaignArg,
    reason: ReasonOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask: a cancel cannot be undone.")] = False,
    config: ConfigOption = Path("config"),
) -> None:
    """Retire the campaign for good: its unsent rows (planned, retry_wait) become skipped /
    cancelled and their reserved coupon codes are released; rows being sent finish. It is never
    planned again. Cancelling again retires rows given back since."""
    if not yes and not typer.confirm(f"Cancel {campaign_id} for good? Its unsent messages will never be sent"):
        raise typer.Exit(1)
    result = _control(config, campaign_id, "cancel", reason)
    word = "cancelled" if result.changed else "already cancelled"
    out.print(
        f"{campaign_id}: {word}; {result.rows:,} unsent rows retired, "
        f"{result.coupons_released:,} coupon codes released",
        markup=False,
    )


# ---------------------------------------------------------------- topslot status


def status_cmd(
    config: ConfigOption = Path("config"),
    as_json: JsonOption = False,
    dead_after: Annotated[
        float | None,
        typer.Option(
            "--dead-after",
            min=1,
            help="Seconds without a heartbeat before a process is dead (default: the node_timeout_s setting).",
        ),
    ] = None,
) -> None:
    """The whole installation from the database, on any node: processes with their last heartbeat
    (running, dead or stopped), campaigns with their state, version in force (and any running
    process holding another) and next buckets, rows in flight per process, failures and bucket
    lateness of the last 24 hours, and the latest pauses, resumes and cancels. Read-only."""
    settings = settings_or_exit(config)
    now = SystemClock().now()
    found = with_engine(
        settings,
        lambda engine: status.read_status(
            engine, now, dead_after=timedelta(seconds=dead_after or settings.node_timeout_s)
        ),
        read_only=True,
    )
    if as_json:
        _print_json(found)
        return
    _print_status(found)


def _print_status(s: status.Status) -> None:
    table = Table(title="processes")
    for column in ("node", "owner", "role", "pid", "version", "started", "last heartbeat", "health"):
        table.add_column(column)
    for p in s.processes:
        health = f"{p.health} ({p.heartbeat_age_s:.0f} s ago)" if p.health != "stopped" else "stopped"
        table.add_row(p.node, p.owner, p.role, str(p.pid), p.version, _when(p.started_at), _when(p.last_heartbeat_utc),
                      health)  # fmt: skip
    out.print(table if s.processes else "processes: none has reported a heartbeat")

    table = Table(title="campaigns")
    for column in ("id", "state", "version", "rows", "next buckets (due, channel, rows)"):
        table.add_column(column, no_wrap=column == "version")
    for c in s.campaigns:
        table.add_row(c.id, _state(c), _version(c), _rows(c.rows), _next(c))
    out.print(table if s.campaigns else "campaigns: none in the database")

    table = Table(title="in flight")
    for column in ("owner", "campaign", "state", "rows", "lease expires"):
        table.add_column(column)
    for f in s.in_flight:
        table.add_row(f.owner or "", f.campaign_id, f.state, f"{f.rows:,}", _when(f.lease_expires_utc))
    out.print(table if s.in_flight else "in flight: nothing")

    table = Table(title="failures (last 24 h)")
    for column in ("campaign", "channel", "state", "rows", "last", "error"):
        table.add_column(column)
    for e in s.failures:
        table.add_row(e.campaign_id, e.channel, e.state, f"{e.rows:,}", _when(e.last_at), e.error or "")
    out.print(table if s.failures else "failures (last 24 h): none")

    table = Table(title="buckets (last 24 h)")
    for column in ("campaign", "channel", "due", "claimed", "accepted", "late", "max late"):
        table.add_column(column)
    for b in s.buckets:
        late = "" if b.late is None else f"{b.late:,}"
        max_late = "" if b.max_late_s is None else f"{b.max_late_s:.1f} s"
        accepted = "" if b.accepted is None else f"{b.accepted:,}"
        table.add_row(b.campaign_id, b.channel, _when(b.due_utc), f"{b.claimed:,}", accepted, late, max_late)
    out.print(table if s.buckets else "buckets (last 24 h): none finished")

    if s.controls:
        table = Table(title="latest controls")
        for column in ("at", "campaign", "action", "by", "reason", "rows"):
            table.add_column(column)
        for event in s.controls:
            table.add_row(_when(event.at), event.campaign_id, event.action, event.actor, event.reason or "",
                          f"{event.rows:,}")  # fmt: skip
        out.print(table)
