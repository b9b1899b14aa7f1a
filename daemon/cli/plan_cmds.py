"""``topslot plan``: when each recipient's message will go, per local slot and zone (a dry run).

Costs: per channel, messages × ``costs.<channel>``; for a segmented channel (SMS, ``costs.sms`` per
segment) the segments are estimated by rendering a deterministic sample of up to 100 planned
recipients per country (``topslot.planning.summary.MessageSample``) exactly as they would be sent
(their language, opt-out line, coupon-shaped code, links as long as real ones) and counting each
country's messages at its sample's mean. A country's estimate is exact when it has at most 100
planned messages; big audiences cost at most 100 renders per country.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.channel import spec_of
from topslot.cli.common import (
    ConfigOption,
    load_campaign_or_exit,
    out,
    progress_bar,
    say,
    settings_or_exit,
    with_engine,
)
from topslot.cli.preview_cmds import preview_coupon
from topslot.clock import SystemClock
from topslot.errors import InvalidInput
from topslot.links.factory import placeholder_track
from topslot.planning import dispatch_starts, jsonl_lines, summary_lines
from topslot.planning.summary import ChannelCost, MessageSample, estimate_costs
from topslot.rendering import MessageLinks, compile_campaign, sms_segments
from topslot.rendering.compliance import missing_settings
from topslot.scheduling.plan_run import PlanOutcome, plan_campaign
from topslot.settings import Settings
from topslot.store.schema import contacts
from topslot.templating import contact_view

FETCH_CHUNK = 500  # sampled contacts read per query
ESTIMATE_MARKER = "estimate"


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
        str | None,
        typer.Option("--from", help="Plan as if it were this instant (ISO 8601; UTC unless an offset is given)."),
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

    async def counted(engine: AsyncEngine) -> tuple[PlanOutcome, list[ChannelCost]]:
        sample = MessageSample(ch for ch in campaign.channels if spec_of(ch).segmented)
        seen = 0
        with progress_bar(f"planning {campaign_id}") as advance:

            def rows_out(rows: list[dict[str, Any]]) -> None:
                nonlocal seen
                sample.add(rows)
                seen += len(rows)
                advance(seen)

            outcome = await plan_campaign(engine, campaign, settings, now, write=False, days=days, rows_out=rows_out)
        costs = await plan_costs(engine, campaign, settings, now, outcome.summary.planned_by_channel, sample)
        return outcome, costs

    if not as_json:
        outcome, costs = with_engine(settings, counted, read_only=True)
        _print_summary(outcome, campaign.channels, now, days, costs)
        return

    async def json_lines(engine: AsyncEngine) -> None:
        # Dispatch starts depend on bucket sizes: count first, then plan again (deterministic) and print.
        outcome, costs = await counted(engine)
        starts = dispatch_starts(outcome.summary.windows)

        def emit(rows: list[dict[str, Any]]) -> None:
            for line in jsonl_lines(rows, starts, costs=costs):
                sys.stdout.write(line + "\n")

        await plan_campaign(engine, campaign, settings, now, write=False, days=days, rows_out=emit)

    with_engine(settings, json_lines, read_only=True)


async def plan_costs(
    engine: AsyncEngine,
    campaign: Campaign,
    settings: Settings,
    now: datetime,
    planned: dict[str, int],
    sample: MessageSample,
) -> list[ChannelCost]:
    """Per planned channel: messages and cost; segmented channels estimated from the rendered sample."""
    unit_costs: dict[str, Decimal] = {ch: Decimal(getattr(campaign.costs, ch, 0)) for ch in campaign.channels}
    segments = await render_sample(engine, campaign, settings, now, sample) if sample.counts else {}
    ordered: dict[str, int] = {ch: planned[ch] for ch in campaign.channels if ch in planned}
    return estimate_costs(ordered, unit_costs, campaign.costs.currency, sample, segments)


async def render_sample(
    engine: AsyncEngine, campaign: Campaign, settings: Settings, now: datetime, sample: MessageSample
) -> dict[tuple[str, str], list[int]]:
    """(channel, country) → the segments of each sampled recipient's message, rendered as it would
    be sent (a recipient whose message does not render is left out of the estimate)."""
    compliance = settings.compliance
    if missing_settings(compliance):  # required for email only: they change no SMS or IM body
        filled = {name: getattr(compliance, name).strip() or "-" for name in ("postal_address", "sender_identity")}
        compliance = compliance.model_copy(update=filled)
    try:
        compiled = compile_campaign(campaign, settings.templates_dir, compliance)
    except InvalidInput as exc:
        say(
            f"segments not estimated: the campaign's templates do not compile ({len(exc.problems)} problem(s); "
            "run topslot validate)"
        )
        return {}
    rows = await _fetch_contacts(engine, sorted(sample.contact_ids()))
    coupon = preview_coupon(campaign)
    slot = campaign.schedule.slots[0]
    unsubscribe = f"{settings.tracking_base_url.rstrip('/')}/u/{ESTIMATE_MARKER.ljust(32, '0')}"
    base = settings.tracking_base_url
    links = {
        ch: MessageLinks(track=placeholder_track(base, ch, ESTIMATE_MARKER), unsubscribe_url=unsubscribe)
        for ch in sample.channels
    }
    found: dict[tuple[str, str], list[int]] = {}
    for (channel, country), ids in sample.groups().items():
        counts = found.setdefault((channel, country), [])
        for contact_id in ids:
            row = rows.get(contact_id)
            if row is None:
                continue
            try:
                body = compiled.render_text(channel, contact_view(row, now.date()), coupon, links[channel], slot)
            except Exception:  # noqa: BLE001 - the dispatcher fails this message too; it costs nothing
                continue
            counts.append(sms_segments(body).segments)
    return found


async def _fetch_contacts(engine: AsyncEngine, ids: Sequence[Any]) -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    async with engine.connect() as conn:
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = ids[start : start + FETCH_CHUNK]
            for row in await conn.execute(select(contacts).where(contacts.c.id.in_(chunk))):
                found[row.id] = row
    return found


def _print_summary(
    outcome: PlanOutcome, channels: Sequence[str], now: datetime, days: int | None, costs: list[ChannelCost]
) -> None:
    window = f" to {(now + timedelta(days=days)).isoformat()}" if days else ""
    out.print(f"plan for {outcome.campaign_id} as of {now.isoformat()}{window}", markup=False, highlight=False)
    audience = outcome.audience
    eligible = ", ".join(f"{ch} {audience.channels[ch].eligible:,}" for ch in channels if ch in audience.channels)
    out.print(f"segment: {audience.segment:,} contact(s); eligible: {eligible}", markup=False, highlight=False)
    for line in summary_lines(outcome.summary, channels=channels, costs=costs):
        style = "yellow" if line.startswith("warning:") else None
        out.print(line, markup=False, highlight=False, style=style, soft_wrap=True)
    if outcome.coupons is not None:
        style = None if outcome.coupons.ok else "yellow"
        prefix = "coupons: " if outcome.coupons.ok else "warning: coupons: "
        out.print(prefix + outcome.coupons.message, markup=False, highlight=False, style=style, soft_wrap=True)
    if not outcome.summary.buckets:
        out.print("nothing to send in this window", markup=False)
