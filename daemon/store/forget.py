"""``topslot contacts forget``: erase one contact's personal data (GDPR art. 17, PIPL art. 47) and
keep the anonymous rows that reports count.

In ONE transaction:

- the contact row keeps its id (deliveries, purchases and conversions point at it) and its country
  (a coarse aggregate the reports group by); every other personal field is blanked (email, phone,
  names, gender, birth date, age, time zone, locale, IM ids, attributes) and ``external_id``
  becomes an opaque random ``forgotten-<16 hex>``, which links to nothing;
- its tags, searches and consents are deleted;
- purchases are kept (amounts, categories and dates feed aggregate reports; they now belong to an
  anonymous contact that has no address and cannot be reached);
- deliveries, events and conversions are kept for the reports, without what could identify the
  person: events lose ip, user agent and referer, deliveries their ``last_error`` (a provider's
  error often quotes the address), conversions their ``contact_ref`` (the shop's id of the person);
- each of its addresses goes on the suppression list with reason ``forgotten``, so that a later
  import of the same person from the shop is never contacted again. The address is kept in clear
  there: honouring the opt-out is the legitimate purpose of keeping it (a suppression list is the
  minimum needed to not contact someone; see docs/security.md), and ``topslot suppressions remove
  --force`` deletes it if the person asks for that too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.channel import CHANNELS, spec_of
from topslot.delivery import SuppressionReason
from topslot.store.db import IMMEDIATE
from topslot.store.schema import (
    consents,
    contact_tags,
    contacts,
    conversions,
    deliveries,
    events,
    searches,
)
from topslot.store.tracking_events import suppress_addresses

FORGOTTEN_PREFIX = "forgotten-"
BLANKED = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "gender",
    "birth_date",
    "age",
    "timezone",
    "locale",
    "im_ids",
    "attributes",
)


@dataclass(frozen=True, slots=True)
class Forgotten:
    contact_id: int
    external_id: str  # the opaque id the contact has now
    suppressed: int  # suppression rows added (addresses already suppressed are not counted)
    tags: int
    searches: int
    consents: int
    events_scrubbed: int
    deliveries_scrubbed: int
    conversions_scrubbed: int


async def find_contact_id(engine: AsyncEngine, ref: str) -> int | None:
    """The contact's id by external id, else (all digits) by internal id."""
    async with engine.connect() as conn:
        return await _find(conn, ref)


async def _find(conn: AsyncConnection, ref: str) -> int | None:
    found = await conn.scalar(select(contacts.c.id).where(contacts.c.external_id == ref))
    if found is None and ref.isdigit():
        found = await conn.scalar(select(contacts.c.id).where(contacts.c.id == int(ref)))
    return found


async def forget_contact(engine: AsyncEngine, ref: str, now: datetime) -> Forgotten | None:
    """Erase the contact ``ref`` (external id, or internal id); None when there is no such contact.
    Forgetting a forgotten contact again changes nothing more."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        contact_id = await _find(conn, ref)
        if contact_id is None:
            return None
        row = (
            await conn.execute(
                select(contacts.c.external_id, contacts.c.email, contacts.c.phone, contacts.c.im_ids).where(
                    contacts.c.id == contact_id
                )
            )
        ).one()
        suppressed = 0
        source = f"contacts forget {contact_id}"
        for channel in CHANNELS:
            addresses = spec_of(channel).all_addresses(row._mapping)
            suppressed += await suppress_addresses(conn, channel, addresses, SuppressionReason.FORGOTTEN, source, now)
        old_ref = row.external_id
        new_ref = old_ref if old_ref.startswith(FORGOTTEN_PREFIX) else FORGOTTEN_PREFIX + secrets.token_hex(8)
        await conn.execute(
            update(contacts)
            .where(contacts.c.id == contact_id)
            .values({**dict.fromkeys(BLANKED), "external_id": new_ref, "updated_at": now})
        )
        tags = await conn.execute(delete(contact_tags).where(contact_tags.c.contact_id == contact_id))
        searched = await conn.execute(delete(searches).where(searches.c.contact_id == contact_id))
        consented = await conn.execute(delete(consents).where(consents.c.contact_id == contact_id))
        its_deliveries = select(deliveries.c.id).where(deliveries.c.contact_id == contact_id).scalar_subquery()
        scrubbed_events = await conn.execute(
            update(events)
            .where(
                events.c.delivery_id.in_(its_deliveries),
                events.c.ip.is_not(None) | events.c.user_agent.is_not(None) | events.c.referer.is_not(None),
            )
            .values(ip=None, user_agent=None, referer=None)
        )
        scrubbed_deliveries = await conn.execute(
            update(deliveries)
            .where(deliveries.c.contact_id == contact_id, deliveries.c.last_error.is_not(None))
            .values(last_error=None)
        )
        scrubbed_conversions = await conn.execute(
            update(conversions)
            .where(
                (conversions.c.contact_id == contact_id) | (conversions.c.contact_ref == old_ref),
                conversions.c.contact_ref.is_not(None),
            )
            .values(contact_ref=None)
        )
    return Forgotten(
        contact_id=contact_id,
        external_id=new_ref,
        suppressed=suppressed,
        tags=tags.rowcount or 0,
        searches=searched.rowcount or 0,
        consents=consented.rowcount or 0,
        events_scrubbed=scrubbed_events.rowcount or 0,
        deliveries_scrubbed=scrubbed_deliveries.rowcount or 0,
        conversions_scrubbed=scrubbed_conversions.rowcount or 0,
    )
