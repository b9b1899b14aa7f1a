"""Human engagement with sent messages: what ``slot_choice: learned`` learns from and what a
``fallback`` channel waits for.

A message is engaged when it has a human open or click: an ``events`` row of kind ``open`` or
``click`` labelled ``human`` or not labelled (``topslot.tracking.classify``; machine opens and link
scanners do not count, as in the report).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.delivery import HANDED_OVER
from topslot.store.schema import deliveries, events

ENGAGING_KINDS = ("open", "click")
Record = tuple[int, int]  # (messages, engaged): topslot.planning.slot_choice.Record
HUMAN = "human"  # the label topslot.tracking.classify gives a person's hit (tests hold them equal)
_CHUNK = 5000


def human_engagement(delivery_id: Any) -> Any:
    """SQL: the delivery ``delivery_id`` (a column or value) has a human open or click."""
    return exists(
        select(literal(1)).where(
            events.c.delivery_id == delivery_id,
            events.c.kind.in_(ENGAGING_KINDS),
            or_(events.c.label.is_(None), events.c.label == HUMAN),
        )
    )


def _history_query(slots: Sequence[str], since: datetime) -> Any:
    engaged = case((human_engagement(deliveries.c.id), 1), else_=0)
    return (
        select(deliveries.c.slot, func.count().label("messages"), func.coalesce(func.sum(engaged), 0).label("engaged"))
        .where(
            deliveries.c.slot.in_(list(slots)),
            deliveries.c.state.in_(sorted(HANDED_OVER)),
            deliveries.c.due_utc >= since,
        )
        .group_by(deliveries.c.slot)
    )


async def population_history(engine: AsyncEngine, slots: Sequence[str], since: datetime) -> dict[str, Record]:
    """Every contact's messages at each of ``slots`` handed over since ``since``, and how many engaged."""
    async with engine.connect() as conn:
        rows = (await conn.execute(_history_query(slots, since))).all()
    return {row.slot: (int(row.messages), int(row.engaged)) for row in rows}


async def contact_histories(
    engine: AsyncEngine, contact_ids: Iterable[int], slots: Sequence[str], since: datetime
) -> dict[int, dict[str, Record]]:
    """Per contact of ``contact_ids``: its messages at each slot since ``since`` and the engaged ones."""
    ids = sorted(set(contact_ids))
    found: dict[int, dict[str, Record]] = {}
    base = _history_query(slots, since)
    async with engine.connect() as conn:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            query = base.add_columns(deliveries.c.contact_id).where(deliveries.c.contact_id.in_(chunk))
            query = query.group_by(deliveries.c.contact_id)
            for row in await conn.execute(query):
                found.setdefault(row.contact_id, {})[row.slot] = (int(row.messages), int(row.engaged))
    return found


def engaged_earlier(campaign_id: str, earlier_channel: Any, contact_id: Any) -> Any:
    """SQL: the contact's row of ``earlier_channel`` in the campaign has a human open or click."""
    earlier = deliveries.alias("earlier")
    return exists(
        select(literal(1)).where(
            and_(
                earlier.c.campaign_id == campaign_id,
                earlier.c.contact_id == contact_id,
                earlier.c.channel == earlier_channel,
                human_engagement(earlier.c.id),
            )
        )
    )
