"""Plan one campaign against the store: stream its audience through the pure planner, and either
write the rows into the ledger (the daemon) or only summarise them (``topslot plan``, a dry run).

Memory stays flat: the audience arrives in keyset-paginated batches, each batch is planned and
written in one transaction, and only per-bucket counters are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign, FrequencyCap
from topslot.channels.registry import Registry
from topslot.coupons.stock import StockCheck
from topslot.delivery import DeliveryState as S
from topslot.delivery import SkipReason as R
from topslot.frequency import cap_plan_rows, effective_cap
from topslot.planning import (
    Bucket,
    DispatchWindow,
    PlanContact,
    Planner,
    PlanSummary,
    PlanSummaryBuilder,
    dispatch_windows,
)
from topslot.planning.slot_choice import SlotHistory
from topslot.settings import Settings
from topslot.store import ledger
from topslot.store.audience import LEFT_OUT_REASONS, AudienceSummary, audience_summary, stream_reachable
from topslot.store.coupons import coupon_check
from topslot.store.engagement import contact_histories, population_history
from topslot.store.frequency import counted_for_plan

T = TypeVar("T")
# A bucket's dispatch start is kept this long after its grace ended (for ``topslot status``), then deleted.
STARTS_KEPT = timedelta(days=1)


Route = tuple[str, str | None]  # (channel, the provider a campaign names for it; None: the default)


def channel_rates(
    settings: Settings, campaign: Campaign, measured: Mapping[Route, float] | None = None
) -> dict[str, float]:
    """Messages per second each channel's provider takes for this campaign: what its dispatch
    windows are sized by (``topslot.channels.registry``; a file outbox counts as 1,000/s). A route
    in ``measured`` (its throughput as last measured, when below its rate) counts at that."""
    registry = Registry(settings)
    rates: dict[str, float] = {}
    for channel in campaign.channels:
        route = (channel, campaign.provider_for(channel))
        rate = registry.rate(*route)
        rates[channel] = min(rate, measured[route]) if measured and route in measured else rate
    return rates


@dataclass
class PlanOutcome:
    campaign_id: str
    now: datetime
    audience: AudienceSummary
    summary: PlanSummary
    written: int = 0
    retired: dict[str, int] = field(default_factory=dict)
    coupons: StockCheck | None = None  # do the codes suffice for the recipients planned?


async def planned_rows(
    engine: AsyncEngine,
    campaign: Campaign,
    planner: Planner,
    now: datetime,
    horizon: datetime | None,
    caps: Mapping[str, FrequencyCap] | None = None,
    capped: Counter[str] | None = None,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Planner rows for the campaign's whole eligible audience, one list per audience batch.

    ``channel_strategy: all`` streams each channel's audience on its own; the other strategies
    stream each contact once with every campaign channel it can receive, since they choose among
    them. ``slot_choice: learned`` reads each batch's history of engagement per slot. ``caps``:
    channel → the frequency cap in force; rows over it come out ``skipped`` / ``frequency_cap``,
    counted per channel in ``capped``."""
    streams = [(ch,) for ch in campaign.channels] if campaign.channel_strategy == "all" else [tuple(campaign.channels)]
    learned = campaign.slot_choice == "learned"
    since = now - campaign.learned.history
    for channels in streams:
        async for batch in stream_reachable(engine, campaign, channels, now):
            histories = (
                await contact_histories(engine, (m.id for m, _ in batch), campaign.schedule.slots, since)
                if learned
                else {}
            )
            contacts = [
                PlanContact(m.id, m.timezone, m.phone, m.country, reachable, histories.get(m.id))
                for m, reachable in batch
            ]
            rows = list(planner.plan_batch(contacts))
            if horizon is not None:
                rows = [r for r in rows if r["due_utc"] < horizon]
            if caps:
                rows = await cap_batch(engine, campaign.id, rows, caps, capped if capped is not None else Counter())
            yield rows


async def cap_batch(
    engine: AsyncEngine,
    campaign_id: str,
    rows: list[dict[str, Any]],
    caps: Mapping[str, FrequencyCap],
    capped: Counter[str],
) -> list[dict[str, Any]]:
    """One batch's rows with the frequency caps applied (``topslot.frequency.cap_plan_rows``): one
    query per capped channel of the batch, for the batch's contacts."""
    out: list[dict[str, Any]] = []
    for channel in sorted({r["channel"] for r in rows}):
        mine = [r for r in rows if r["channel"] == channel]
        planned = [r for r in mine if r["state"] == S.PLANNED]
        cap = caps.get(channel)
        if cap is not None and planned:
            counted = await counted_for_plan(
                engine, campaign_id, channel, [r["contact_id"] for r in planned],
                min(r["due_utc"] for r in planned), max(r["due_utc"] for r in planned), cap.per,
            )  # fmt: skip
            mine, n = cap_plan_rows(mine, cap, counted)
            capped[channel] += n
        out += mine
    return out


async def plan_campaign(
    engine: AsyncEngine,
    campaign: Campaign,
    settings: Settings,
    now: datetime,
    *,
    write: bool,
    days: int | None = None,
    rows_out: Any = None,
    measured: Mapping[Route, float] | None = None,
) -> PlanOutcome:
    """Plan ``campaign`` as seen at ``now``. ``write`` puts it in the ledger; otherwise nothing is
    written. ``days`` limits the plan to slots due within that many days of ``now``. ``rows_out``,
    if given, is called with each batch of rows (``topslot plan --json``). ``measured``: routes
    whose measured throughput is below their rate (``channel_rates``). Runs that write take turns
    per campaign (``ledger.plan_turn``: on every node, on PostgreSQL)."""
    if not write:
        return await _plan(
            engine, campaign, settings, now, write=False, days=days, rows_out=rows_out, measured=measured
        )
    async with ledger.plan_turn(engine, campaign.id):
        return await _plan(engine, campaign, settings, now, write=True, days=days, rows_out=rows_out, measured=measured)


async def _plan(
    engine: AsyncEngine,
    campaign: Campaign,
    settings: Settings,
    now: datetime,
    *,
    write: bool,
    days: int | None,
    rows_out: Any,
    measured: Mapping[Route, float] | None,
) -> PlanOutcome:
    # Counted beside the planning (its own connection; on PostgreSQL the server's other core) and
    # needed only for the summary at the end.
    counting = asyncio.create_task(audience_summary(engine, campaign, now))
    try:
        return await _plan_rows(engine, campaign, settings, now, counting, write, days, rows_out, measured)
    finally:
        if not counting.done():
            counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counting


async def _plan_rows(
    engine: AsyncEngine,
    campaign: Campaign,
    settings: Settings,
    now: datetime,
    counting: asyncio.Task[AudienceSummary],
    write: bool,
    days: int | None,
    rows_out: Any,
    measured: Mapping[Route, float] | None,
) -> PlanOutcome:
    population = None
    if campaign.slot_choice == "learned":
        population = await population_history(engine, campaign.schedule.slots, now - campaign.learned.history)
    planner = new_planner(campaign, settings, now, population)
    horizon = now + timedelta(days=days) if days is not None else None
    caps: dict[str, FrequencyCap] = {
        ch: cap for ch in campaign.channels if (cap := effective_cap(campaign, settings, ch)) is not None
    }
    capped: Counter[str] = Counter()
    builder = PlanSummaryBuilder()
    plan_run = uuid.uuid4().hex
    written = 0
    # A dry run has no ledger rows to count coupons against: remember who was planned instead.
    recipients: set[int] | None = set() if campaign.coupon is not None and not write else None
    once = campaign.schedule.per_recipient == "once" and await ledger.has_handed_over(engine, campaign.id)
    # Read ahead: the next batches are streamed and planned while this one is being written.
    rows_source = planned_rows(engine, campaign, planner, now, horizon, caps, capped)
    async for rows in read_ahead(rows_source, depth=2):
        for row in rows:
            builder.add(row)
        if recipients is not None:
            recipients.update(r["contact_id"] for r in rows if r["state"] == S.PLANNED)
        if rows_out is not None:
            rows_out(rows)
        if write:
            written += await ledger.write_plan_batch(
                engine,
                rows,
                plan_run=plan_run,
                arrive_within=campaign.schedule.arrive_within,
                once=once,
                now=now,
            )
    audience = await counting
    left_out = Counter(planner.left_out)
    left_out[R.FREQUENCY_CAP] += capped.total()
    for channel in audience.channels.values():
        left_out.update({r: channel.left_out.get(r, 0) for r in LEFT_OUT_REASONS})
    rates = channel_rates(settings, campaign, measured)
    summary = builder.build(rates, campaign.schedule.arrive_within, left_out=left_out, now=now)
    zone_sources: dict[str, dict[str, int]] = {}
    for (ch, source), count in sorted(planner.zone_sources.items()):
        zone_sources.setdefault(ch, {})[source] = count
    fixed = campaign.schedule.timezone != "recipient"
    fallback = None if fixed else campaign.schedule.fallback_timezone or settings.default_timezone
    slot_bases: dict[str, dict[str, dict[str, int]]] = {}
    for (ch, slot, basis), count in planner.slot_bases.items():
        slot_bases.setdefault(ch, {}).setdefault(slot, {})[basis] = count
    summary = replace(
        summary,
        zone_sources=zone_sources,
        fallback_zone=fallback,
        slot_bases=slot_bases,
        low_confidence_zone=campaign.schedule.low_confidence_zone,
        frequency_caps={ch: str(cap) for ch, cap in caps.items()},
        frequency_capped={ch: capped[ch] for ch in caps},
    )
    outcome = PlanOutcome(campaign.id, now, audience, summary, written)
    if write:
        outcome.retired = await ledger.retire_unplanned(engine, campaign, plan_run, now)
        await settle_dispatch_starts(engine, campaign, rates, now)
    outcome.coupons = await coupon_check(engine, campaign, recipients)
    return outcome


async def read_ahead(source: AsyncIterator[T], depth: int) -> AsyncIterator[T]:
    """Items of ``source``, produced by a separate task up to ``depth`` items ahead of the consumer."""
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async for item in source:
                await queue.put((True, item))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put((False, exc))
        else:
            await queue.put((False, None))

    producer = asyncio.create_task(produce())
    try:
        while True:
            more, item = await queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


def new_planner(
    campaign: Campaign, settings: Settings, now: datetime, population: SlotHistory | None = None
) -> Planner:
    return Planner(
        campaign,
        now,
        default_timezone=settings.default_timezone,
        default_country=settings.default_country,
        quiet=settings.quiet_hours.rules(),
        population=population,
    )


async def ledger_windows(
    engine: AsyncEngine, campaign: Campaign, rates: Mapping[str, float], now: datetime
) -> list[DispatchWindow]:
    """The dispatch window of every bucket of the campaign planned in the ledger, sized at ``rates``."""
    buckets = await ledger.planned_buckets(engine, campaign.id)
    return dispatch_windows(
        (Bucket(b.due_utc, b.channel, b.count) for b in buckets), rates, campaign.schedule.arrive_within, now=now
    )


async def settle_dispatch_starts(
    engine: AsyncEngine, campaign: Campaign, rates: Mapping[str, float], now: datetime
) -> None:
    """Size every planned bucket of the campaign from the ledger and store its dispatch start;
    forget the starts of buckets past their grace for over ``STARTS_KEPT``."""
    windows = await ledger_windows(engine, campaign, rates, now)
    await ledger.set_dispatch_starts(engine, campaign.id, ((w.channel, w.due_utc, w.start_utc) for w in windows))
    await ledger.forget_dispatch_starts(engine, campaign.id, now - campaign.schedule.missed_slot.grace - STARTS_KEPT)
