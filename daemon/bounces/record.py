"""Applying feedback to the store: which delivery it is about, then the ledger, the events and the
suppression list, in one transaction.

**Which delivery** (``find_delivery``), from the surest clue to the weakest:

1. a VERP address (``topslot.links.verp``) the message was sent to, or the returned original's
   envelope sender: a signed token;
2. the signed unsubscribe token in the returned original's ``List-Unsubscribe``;
3. the returned original's ``Message-ID`` (``<d{id}.{campaign}@{domain}>``): not signed, so only
   when no VERP address was there at all (a VERP address that does not verify is a forgery or an
   alteration: nothing is recorded), and only if the bounce names the very address the delivery
   went to (``record_feedback`` checks it).

**What changes** (``record_feedback``), for an email delivery:

- every bounce (hard, soft, blocked): an ``events`` row (``kind`` ``bounce``, ``label`` the bounce
  kind, ``reason`` the status and diagnostic); the ledger row ``sent`` → ``bounced`` (``unknown`` →
  ``bounced`` too: the bounce proves the message left), ``last_error`` the reason;
- a hard bounce: the address is suppressed (``hard_bounce``); a soft bounce: once the contact's
  email deliveries have ``soft_limit`` soft bounces, the address is suppressed (``soft_bounces``);
  a blocked message suppresses nothing;
- a complaint: an ``events`` row (``complaint``) and the address suppressed (``complaint``); the
  ledger row keeps its state (the message was delivered);
- the same feedback for the same delivery again (a relay retrying) changes nothing (``REPEAT``);
- feedback about a delivery still ``claimed`` or ``sending`` (a relay that bounced before the
  dispatcher recorded the send: a local Postfix takes milliseconds) changes nothing yet
  (``PENDING``): the receiver waits a moment and asks again, then answers ``451`` so the relay
  retries; ``POST /feedback`` answers 503 so the ESP does; ``bounces import`` counts it.

An ESP's delivery event (``POST /feedback``): ``sent`` → ``delivered``. Auto-replies, delay
warnings and unrecognised messages change nothing (``IGNORED``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot import metrics
from topslot.bounces.classify import BOUNCES, Feedback, Kind
from topslot.channel import spec_of
from topslot.delivery import IN_FLIGHT, SuppressionReason
from topslot.delivery import DeliveryState as S
from topslot.links.keys import Keyring
from topslot.links.tokens import TEST_DELIVERY_ID, TokenError, verify
from topslot.links.verp import NotVerp, delivery_of, split
from topslot.logs import get_logger
from topslot.settings import BounceSettings
from topslot.store.db import IMMEDIATE
from topslot.store.schema import contacts, deliveries, events
from topslot.store.tracking_events import insert_events, suppress_addresses

log = get_logger("bounces")
_MESSAGE_ID = re.compile(r"^<d(\d{1,18})\.[^@<>\s]+@[^@<>\s]+>$")
_BOUNCED_FROM = (S.SENT, S.UNKNOWN)


class Result(StrEnum):
    RECORDED = "recorded"
    REPEAT = "repeat"  # this delivery already had this feedback
    IGNORED = "ignored"  # an auto-reply, a delay warning, nothing recognised
    UNMATCHED = "unmatched"  # it names no delivery of ours (forged, altered, another sender's)
    PENDING = "pending"  # its delivery is still being sent (not recorded yet): nothing done, try again


@dataclass(frozen=True, slots=True)
class Match:
    delivery_id: int
    by: str  # verp | unsubscribe_token | message_id


@dataclass(frozen=True, slots=True)
class Recorded:
    result: Result
    kind: Kind
    delivery_id: int | None = None
    matched_by: str | None = None
    suppressed: int = 0


def find_delivery(feedback: Feedback, keyring: Keyring, verp_local: str) -> Match | None:
    """The delivery ``feedback`` is about (see the module docstring), or None."""
    forged = False
    for address in (*feedback.addressed_to, *feedback.original_senders):
        try:
            return _real(Match(delivery_of(address, keyring, verp_local), "verp"))
        except NotVerp:
            continue
        except TokenError:
            forged = True  # our shape and local part, but it does not verify
    for token in feedback.unsubscribe_tokens:
        try:
            return _real(Match(verify(token, keyring, "unsubscribe").delivery_id, "unsubscribe_token"))
        except TokenError:
            continue
    if forged:
        return None
    for message_id in feedback.message_ids:
        found = _MESSAGE_ID.match(message_id.strip())
        if found:
            return _real(Match(int(found[1]), "message_id"))
    return None


def _real(match: Match) -> Match | None:
    return None if match.delivery_id == TEST_DELIVERY_ID else match  # a proof's: nothing to record


def is_verp(address: str, verp_local: str) -> bool:
    """``address`` has the VERP shape with our local part (it may still not verify)."""
    try:
        return split(address)[0].lower() == verp_local
    except NotVerp:
        return False


async def record_feedback(
    engine: AsyncEngine, feedback: Feedback, match: Match | None, now: datetime, *, soft_limit: int
) -> Recorded:
    """Apply ``feedback`` about ``match`` (``find_delivery``); one committed transaction; idempotent."""
    kind = feedback.kind
    if kind not in BOUNCES and kind not in (Kind.COMPLAINT, Kind.DELIVERED):
        return Recorded(Result.IGNORED, kind)
    if match is None:
        return Recorded(Result.UNMATCHED, kind)
    if kind is Kind.DELIVERED:
        return await _delivered(engine, match, now)
    email = spec_of("email")
    query = (
        select(
            deliveries.c.campaign_id,
            deliveries.c.channel,
            deliveries.c.state,
            deliveries.c.contact_id,
            contacts.c.email,
        )
        .join(contacts, contacts.c.id == deliveries.c.contact_id)
        .where(deliveries.c.id == match.delivery_id)
    )
    event_kind = "complaint" if kind is Kind.COMPLAINT else "bounce"
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        row = (await conn.execute(query)).first()
        if row is None or row.channel != "email":
            return Recorded(Result.UNMATCHED, kind)
        address = email.suppression_address(row.email) if row.email else None
        if match.by == "message_id" and (
            address is None or feedback.recipient is None or email.suppression_address(feedback.recipient) != address
        ):
            return Recorded(Result.UNMATCHED, kind)  # an unsigned clue must name the address it went to
        if row.state in IN_FLIGHT:  # a relay quicker than our record of the send: nothing yet, ask again
            return Recorded(Result.PENDING, kind, match.delivery_id, match.by)
        seen = await conn.scalar(
            select(exists().where(events.c.delivery_id == match.delivery_id, events.c.kind == event_kind))
        )
        if seen:
            return Recorded(Result.REPEAT, kind, match.delivery_id, match.by)
        reason = " ".join(p for p in (kind.value, feedback.status, feedback.reason) if p)[:200]
        await insert_events(
            conn,
            [
                {
                    "delivery_id": match.delivery_id,
                    "campaign_id": row.campaign_id,
                    "kind": event_kind,
                    "label": kind.value,
                    "reason": reason,
                    "occurred_at": now,
                    "method": "MAIL",
                }
            ],
        )
        if kind in BOUNCES:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == match.delivery_id, deliveries.c.state.in_(_BOUNCED_FROM))
                .values(state=S.BOUNCED, last_error=reason, updated_at=now)
            )
        suppress = await _suppression(conn, kind, row.contact_id, soft_limit)
        added = 0
        if suppress is not None and address is not None:
            source = f"{feedback.format}:delivery:{match.delivery_id}"
            added = await suppress_addresses(conn, "email", [address], suppress, source, now)
    return Recorded(Result.RECORDED, kind, match.delivery_id, match.by, added)


async def take(
    engine: AsyncEngine, keyring: Keyring, settings: BounceSettings, feedback: Feedback, now: datetime
) -> Recorded:
    """Match and record ``feedback``, count it (``topslot_email_feedback_total``) and log what was done
    (the receiver, ``bounces import`` and ``POST /feedback`` all come here)."""
    match = find_delivery(feedback, keyring, settings.local)
    recorded = await record_feedback(engine, feedback, match, now, soft_limit=settings.soft_limit)
    metrics.count_feedback(feedback.kind.value, recorded.result.value)
    if recorded.result is not Result.IGNORED:
        log.info(
            "feedback_received",
            kind=feedback.kind.value,
            format=feedback.format,
            result=recorded.result.value,
            delivery_id=recorded.delivery_id,
            matched_by=recorded.matched_by,
            status=feedback.status,
            suppressed=recorded.suppressed,
        )
    return recorded


async def _delivered(engine: AsyncEngine, match: Match, now: datetime) -> Recorded:
    """An ESP says the message reached the mailbox: ``sent`` → ``delivered`` (the first final word wins)."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        changed = await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == match.delivery_id, deliveries.c.channel == "email", deliveries.c.state == S.SENT)
            .values(state=S.DELIVERED, updated_at=now)
        )
        if changed.rowcount:
            return Recorded(Result.RECORDED, Kind.DELIVERED, match.delivery_id, match.by)
        found = await conn.scalar(
            select(deliveries.c.state).where(deliveries.c.id == match.delivery_id, deliveries.c.channel == "email")
        )
    return Recorded(Result.UNMATCHED if found is None else Result.REPEAT, Kind.DELIVERED, match.delivery_id, match.by)


async def _suppression(conn: AsyncConnection, kind: Kind, contact_id: int, soft_limit: int) -> SuppressionReason | None:
    if kind is Kind.HARD_BOUNCE:
        return SuppressionReason.HARD_BOUNCE
    if kind is Kind.COMPLAINT:
        return SuppressionReason.COMPLAINT
    if kind is not Kind.SOFT_BOUNCE:
        return None
    soft = and_(
        events.c.kind == "bounce",
        events.c.label == Kind.SOFT_BOUNCE.value,
        deliveries.c.contact_id == contact_id,
        deliveries.c.channel == "email",
    )
    count = await conn.scalar(
        select(func.count()).select_from(events.join(deliveries, deliveries.c.id == events.c.delivery_id)).where(soft)
    )
    return SuppressionReason.SOFT_BOUNCES if (count or 0) >= soft_limit else None
