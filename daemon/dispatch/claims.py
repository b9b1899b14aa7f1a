"""Claiming a bucket batch by batch for one lease owner, each batch handed to the dispatcher: what
the scheduler does when a bucket fires, and what each dispatch helper process does alongside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from daemon import failpoints
from daemon.campaign import Campaign, FrequencyCap
from daemon.clock import Clock, clock_span
from daemon.logs import get_logger
from daemon.store import ledger

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
    cap: FrequencyCap | None = None,
) -> int:
    """Claim the bucket's planned rows batch by batch for ``owner``, handing each batch to
    ``on_claimed``, until none is left or ``stopped()``; returns how many were claimed. ``cap``: the
    frequency cap on the campaign's messages on ``channel`` (``daemon.frequency.effective_cap``);
    rows over it are skipped as they are claimed (logged as ``frequency_capped``)."""
    claimed = capped = last_id = 0
    while not stopped():
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
