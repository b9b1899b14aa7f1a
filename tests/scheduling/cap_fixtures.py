"""Two campaigns over the ledger fixtures' population, and settings with frequency caps."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduling.ledger_fixtures import NOW, campaign, settings
from topslot.campaign import Campaign, FrequencyCap
from topslot.settings import Settings
from topslot.store import ledger
from topslot.store.schema import deliveries

WEEK = timedelta(days=7)


def cap(max_: int, per: timedelta = WEEK) -> FrequencyCap:
    return FrequencyCap(max=max_, per=per)


def capped_settings(tmp_path: Path, email: FrequencyCap | None) -> Settings:
    """The fixtures' settings with an email cap (None: no caps)."""
    caps = {"email": email} if email is not None else {}
    return settings(tmp_path).model_copy(update={"frequency_caps": caps})


def named(campaign_id: str, day: date, override: Any = "absent", **schedule: Any) -> Campaign:
    """The fixtures' campaign as ``campaign_id``, on ``day`` only; ``override``: its own
    ``frequency_cap`` for email (a FrequencyCap, or None to exempt it)."""
    c = campaign(start=day, end=day, **schedule)
    update_: dict[str, Any] = {"id": campaign_id, "name": campaign_id}
    if override != "absent":
        update_["frequency_cap"] = {"email": override}
    return c.model_copy(update=update_)


async def record(engine: AsyncEngine, *campaigns: Campaign) -> None:
    for c in campaigns:
        await ledger.record_campaign(engine, c, "hash", NOW)


async def set_state(engine: AsyncEngine, campaign_id: str, state: str, **values: Any) -> None:
    """Every row of the campaign in ``state`` (as if it had been sent, ...)."""
    async with engine.begin() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.campaign_id == campaign_id).values(state=state, **values)
        )


async def states(engine: AsyncEngine, campaign_id: str) -> dict[int, tuple[str, str | None]]:
    """contact id → (state, skip_reason) of the campaign's rows (one per contact)."""
    async with engine.connect() as conn:
        result = await conn.execute(
            select(deliveries.c.contact_id, deliveries.c.state, deliveries.c.skip_reason).where(
                deliveries.c.campaign_id == campaign_id
            )
        )
        return {r.contact_id: (r.state, r.skip_reason) for r in result}


async def claim_everything(
    engine: AsyncEngine, c: Campaign, capped: FrequencyCap | None, now: datetime = NOW, owner: str = "node-a"
) -> int:
    """Claim every planned bucket of ``c`` with ``capped`` in force; how many rows were claimed."""
    total = 0
    for bucket in await ledger.planned_buckets(engine, c.id):
        total += len(
            await ledger.claim_bucket(
                engine, c.id, bucket.channel, bucket.due_utc, owner=owner, lease=timedelta(hours=1), now=now, cap=capped
            )
        )
    return total
