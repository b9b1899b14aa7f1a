"""Seeding a ledger for the send benchmarks: N contacts with consent for one channel and one planned
row each, all in one bucket (not timed; shared by send_pipeline.py and sms_pipeline.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from daemon.campaign import Campaign
from daemon.store import ledger
from daemon.store.db import open_engine, upgrade
from daemon.store.schema import consents, contacts, deliveries

BATCH = 20_000


async def seed_bucket(
    url: str,
    schema: str | None,
    campaign: Campaign,
    channel: str,
    person: Callable[[int], dict[str, Any]],
    n: int,
    *,
    due: datetime,
    at: datetime,
) -> None:
    """``n`` contacts (``person(i)`` gives contact ``i + 1``'s row) with ``channel`` consent and one
    ``planned`` row each in ``campaign``'s bucket ``due`` (07:30, UTC)."""
    engine = open_engine(url, schema=schema)
    await upgrade(engine)
    await ledger.record_campaign(engine, campaign, "bench", at)
    async with engine.begin() as conn:
        for start in range(0, n, BATCH):
            ids = range(start, min(n, start + BATCH))
            await conn.execute(insert(contacts), [person(i) for i in ids])
            await conn.execute(
                insert(consents),
                [{"contact_id": i + 1, "channel": channel, "granted": True, "recorded_at": at} for i in ids],
            )
            await conn.execute(
                insert(deliveries),
                [
                    {
                        "campaign_id": campaign.id, "contact_id": i + 1, "channel": channel,
                        "slot_date": due.date(), "slot": "07:30", "due_utc": due,
                        "dispatch_start_utc": due - timedelta(minutes=10), "timezone": "UTC",
                        "tz_source": "campaign", "state": "planned", "plan_run": "bench",
                        "created_at": at, "updated_at": at,
                    }
                    for i in ids
                ],
            )  # fmt: skip
    await engine.dispose()
