"""Ledgers in the middle of a send, for the receipt tests (store/test_receipts.py,
tracking/test_twilio_routes.py, tracking/test_im_routes.py): a campaign, contacts with their consents,
and one row each that the dispatcher has marked ``sending`` under its lease."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from topslot.delivery import DeliveryState as S
from topslot.store.schema import campaigns, consents, contacts, deliveries


async def add_campaign(conn: AsyncConnection, campaign_id: str, name: str, at: datetime) -> None:
    await conn.execute(insert(campaigns), {"id": campaign_id, "name": name, "config_hash": "h", "loaded_at": at})


async def add_contact(conn: AsyncConnection, at: datetime, *, consent: Iterable[str] = (), **values: Any) -> int:
    """A contact of ``values`` with consent (from the CRM) for each channel of ``consent``; its id."""
    contact_id = (
        await conn.execute(
            insert(contacts).values(**values, created_at=at, updated_at=at).returning(contacts.c.id)
        )
    ).scalar_one()
    granted = [
        {"contact_id": contact_id, "channel": ch, "granted": True, "source": "crm", "recorded_at": at} for ch in consent
    ]
    if granted:
        await conn.execute(insert(consents), granted)
    return contact_id


async def add_leased_row(
    conn: AsyncConnection,
    *,
    campaign_id: str,
    contact_id: int,
    channel: str,
    owner: str,
    at: datetime,
    timezone: str,
    tz_source: str,
    state: str = S.SENDING,
) -> int:
    """A delivery row of the 2027-05-06 07:30 slot, due ``at``, in ``state`` and leased to ``owner``; its id."""
    return (
        await conn.execute(
            insert(deliveries)
            .values(
                campaign_id=campaign_id,
                contact_id=contact_id,
                channel=channel,
                slot_date=date(2027, 5, 6),
                slot="07:30",
                due_utc=at,
                timezone=timezone,
                tz_source=tz_source,
                state=state,
                lease_owner=owner,
                created_at=at,
                updated_at=at,
            )
            .returning(deliveries.c.id)
        )
    ).scalar_one()
