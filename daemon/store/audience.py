"""Audience queries: how big a campaign's segment is per channel, and streaming its eligible contacts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.delivery import INELIGIBLE
from topslot.delivery import SkipReason as R
from topslot.store.schema import contacts
from topslot.store.segments import audience_filter, channel_eligible, has_address, has_consent, is_suppressed

DEFAULT_STREAM_BATCH = 5000
LEFT_OUT_REASONS = INELIGIBLE


@dataclass(frozen=True)
class ChannelAudience:
    channel: str
    eligible: int
    left_out: dict[str, int]  # reason → contacts (first reason that applies, in LEFT_OUT_REASONS order)


@dataclass(frozen=True)
class AudienceSummary:
    campaign_id: str
    segment: int  # contacts matching the audience, whatever the channel
    channels: Mapping[str, ChannelAudience] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AudienceMember:
    """What the planner and renderer need about one eligible contact."""

    id: int
    external_id: str
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    gender: str | None
    birth_date: date | None
    country: str | None
    timezone: str | None
    locale: str | None
    im_ids: dict[str, str] | None
    attributes: dict[str, Any] | None


_MEMBER_COLUMNS = [contacts.c[name] for name in AudienceMember.__slots__]


async def audience_summary(engine: AsyncEngine, campaign: Campaign, now: datetime) -> AudienceSummary:
    """Segment size and, per campaign channel, who is eligible and why the others are left out."""
    segment = audience_filter(campaign.audience, now)
    columns: list[Any] = [func.count().label("segment")]
    for ch in campaign.channels:
        provider = campaign.provider_for(ch)
        address = has_address(ch, provider)
        consent = has_consent(ch)
        suppressed = is_suppressed(ch, provider)
        counts = {
            R.NO_ADDRESS: not_(address),
            R.NO_CONSENT: and_(address, not_(consent)),
            R.SUPPRESSED: and_(address, consent, suppressed),
            "eligible": and_(address, consent, not_(suppressed)),
        }
        columns += [
            func.coalesce(func.sum(case((test, 1), else_=0)), 0).label(f"{ch}:{k}") for k, test in counts.items()
        ]
    async with engine.connect() as conn:
        row = (await conn.execute(select(*columns).select_from(contacts).where(segment))).mappings().one()
    channels: dict[str, ChannelAudience] = {
        ch: ChannelAudience(ch, int(row[f"{ch}:eligible"]), {r: int(row[f"{ch}:{r}"]) for r in LEFT_OUT_REASONS})
        for ch in campaign.channels
    }
    return AudienceSummary(campaign.id, int(row["segment"]), channels)


async def stream_audience(
    engine: AsyncEngine, campaign: Campaign, channel: str, now: datetime, batch_size: int = DEFAULT_STREAM_BATCH
) -> AsyncIterator[list[AudienceMember]]:
    """Batches of eligible contacts for ``channel`` in id order: flat memory, one short read per
    batch, so writers are never held up for the whole stream."""
    async for batch in stream_reachable(engine, campaign, (channel,), now, batch_size):
        yield [member for member, _channels in batch]


async def stream_reachable(
    engine: AsyncEngine,
    campaign: Campaign,
    channels: Sequence[str],
    now: datetime,
    batch_size: int = DEFAULT_STREAM_BATCH,
) -> AsyncIterator[list[tuple[AudienceMember, tuple[str, ...]]]]:
    """Batches of the campaign's contacts eligible on at least one of ``channels``, in id order,
    each with the channels (of ``channels``, in that order) it is eligible on.

    Each batch covers the next ``batch_size`` contact ids (found on the primary key alone), then
    filters that id range. A plain ``id > after ORDER BY id LIMIT n`` over the filtered audience lets
    PostgreSQL, with stale statistics after a bulk import, join the whole table for every batch
    (0.6 s a batch at 1M contacts instead of 14 ms)."""
    tests = [channel_eligible(ch, campaign.provider_for(ch)) for ch in channels]
    where = and_(audience_filter(campaign.audience, now), tests[0] if len(tests) == 1 else or_(*tests))
    flags = [case((test, 1), else_=0).label(f"eligible_{i}") for i, test in enumerate(tests)] if len(tests) > 1 else []
    width = len(_MEMBER_COLUMNS)
    only = tuple(channels)
    after = 0
    while True:
        upper_query = (
            select(contacts.c.id).where(contacts.c.id > after).order_by(contacts.c.id).offset(batch_size - 1).limit(1)
        )
        async with engine.connect() as conn:
            upper = await conn.scalar(upper_query)
            in_range = contacts.c.id > after if upper is None else and_(contacts.c.id > after, contacts.c.id <= upper)
            query = select(*_MEMBER_COLUMNS, *flags).where(where, in_range).order_by(contacts.c.id)
            rows = (await conn.execute(query)).all()
        if rows:
            if flags:
                yield [(AudienceMember(*row[:width]), _flagged(channels, row[width:])) for row in rows]
            else:
                yield [(AudienceMember(*row), only) for row in rows]
        if upper is None:
            return
        after = upper


def _flagged(channels: Sequence[str], flags: Sequence[int]) -> tuple[str, ...]:
    return tuple(ch for ch, ok in zip(channels, flags, strict=True) if ok)


async def count_segment(engine: AsyncEngine, campaign: Campaign, now: datetime) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(contacts).where(audience_filter(campaign.audience, now))
        return int(await conn.scalar(query) or 0)
