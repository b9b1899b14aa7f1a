"""Claiming a bucket batch by batch for one lease owner, each batch handed to the dispatcher: what
the scheduler does when a bucket fires, and what each dispatch helper process does alongside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot import failpoints
from topslot.campaign import Campaign, FrequencyCap
from topslot.clock import Clock, clock_span
from topslot.delivery import DeliveryState as S
from topslot.logs import get_logger
from topslot.pacing import QuietRules
from topslot.store import controls, ledger
from topslot.store.schema import deliveries

log = get_logger("dispatch")

CLAIM_BATCH = 1000

# Called with each batch of claimed rows (the dispatcher's ``dispatch``).
ClaimHandler = Callable[[Campaign, str, datetime, Sequence[ledger.Claimed]], Awaitable[None]]


async def claim_all(
    engine: AsyncEngine,
    campaign: Campaign,
    channel: str,
    due_utc: datetime,
    *,
    owner: str,
    lease: timedelta,
    clock: Clock,
    on_claimed: ClaimHandler | None,
    stopped: Callable[[], bool],
    quiet: QuietRules | None = None,
    cap: FrequencyCap | None = None,
) -> int:
    """Claim the bucket's planned rows batch by batch for ``owner``, handing each batch to
    ``on_claimed``, until none is left or ``stopped()``; returns how many were claimed.

    The rules checked as the bucket goes, all from the ledger and events of that moment:
    - a ``fallback`` campaign's rows whose earlier channel got a human open or click are skipped
      first (``ledger.skip_engaged_fallbacks``, logged ``fallback_not_needed``);
    - a campaign paused or cancelled (``topslot.store.controls``) claims nothing more from the next
      batch on; its unclaimed rows stay as they are;
    - before each batch, rows whose recipients are inside their channel's ``quiet`` hours when the
      messages arrive (the slot, or now once it has passed) are skipped (``ledger.skip_quiet_hours``,
      logged ``quiet_hours_skipped``): a bucket that fires late, or runs on into the evening, stops
      (a channel with quiet hours for no country, as email by default, reads nothing for it);
    - ``cap``, the frequency cap on the campaign's messages on ``channel``
      (``topslot.frequency.effective_cap``): rows over it are skipped as they are claimed, in the
      claim's transaction (logged ``frequency_capped``)."""
    claimed = capped = last_id = 0
    bucket = and_(
        deliveries.c.campaign_id == campaign.id, deliveries.c.channel == channel, deliveries.c.due_utc == due_utc
    )
    if quiet is not None and not quiet.windows(channel):
        quiet = None  # nobody's quiet hours on this channel: no read of the bucket's zones per batch
    if campaign.channel_strategy == "fallback":
        skipped = await ledger.skip_engaged_fallbacks(engine, campaign.id, bucket, clock.now())
        if skipped:
            log.info(
                "fallback_not_needed", campaign_id=campaign.id, channel=channel, slot=due_utc.isoformat(), rows=skipped
            )
    while not stopped():
        # paused or cancelled meanwhile (``topslot campaigns``, any node): stop before the next batch
        if (state := await controls.campaign_state(engine, campaign.id)) is not controls.ControlState.ACTIVE:
            log.warning("claims_held", channel=channel, slot=due_utc.isoformat(), state=str(state), claimed=claimed)
            break
        if quiet is not None:
            # judged when the messages arrive: the slot, or now for a bucket running late
            now = clock.now()
            hushed = await ledger.skip_quiet_hours(engine, bucket, S.PLANNED, quiet, max(now, due_utc), now)
            if hushed:
                log.warning("quiet_hours_skipped", channel=channel, slot=due_utc.isoformat(), rows=hushed)
        batch = await ledger.claim_batch(
            engine, campaign.id, channel, due_utc,
            owner=owner, lease=clock_span(clock, lease), now=clock.now(), limit=CLAIM_BATCH, after_id=last_id,
            cap=cap,
        )  # fmt: skip
        if not batch.claimed and not batch.capped:
            break
        claimed += len(batch.claimed)
        capped += len(batch.capped)
        last_id = batch.last_id
        if not batch.claimed:
            continue
        failpoints.hit("after_claim")  # fault tests only: no-op unless TOPSLOT_FAILPOINT
        if on_claimed is not None:
            await on_claimed(campaign, channel, due_utc, batch.claimed)
    if capped:
        log.info("frequency_capped", channel=channel, due_utc=due_utc.isoformat(), skipped=capped, cap=str(cap))
    return claimed
