"""Provider receipts in the store: a provider's later word on a message it accepted (a Twilio status
callback) turns the ledger row with that provider id ``sent`` → ``delivered`` | ``bounced``, and may
put the row's address on the suppression list. A receipt may also name the row by its delivery id
(an IM gateway's callback: ``record_delivery_receipt``), for rows of that provider only.

Rules:

- only a ``sent`` row changes; the first final receipt wins (receipts are not ordered: a
  ``delivered`` after ``bounced``, or the reverse, changes nothing), so repeats are harmless;
- a receipt can arrive before the dispatcher has committed the row's ``sent`` + provider id (it
  commits a chunk after the sends return). Such a receipt waits in ``provider_receipts`` (first one
  per provider id kept, at most ``MAX_PENDING`` rows, purged after ``PENDING_TTL``) and
  ``apply_pending`` — called by ``record_outcomes`` inside its transaction — applies it the moment
  the row is recorded. One that names its row by delivery id waits under ``delivery:<id>`` (the
  provider id the row will get is not known yet) and is applied through the id the row gets.

No receipt is lost to that race. On SQLite every writer takes the write lock at BEGIN (IMMEDIATE),
so the two transactions run one after the other. On PostgreSQL (READ COMMITTED) a receipt about to
be parked takes an exclusive transaction advisory lock and looks for its row once more, while
``apply_pending`` takes the same lock shared before it reads the parked receipts: whichever commits
first, the other sees it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import RowMapping, bindparam, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.channel import spec_of
from topslot.delivery import RECEIPTS
from topslot.delivery import DeliveryState as S
from topslot.logs import get_logger
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import upsert_insert
from topslot.store.schema import contacts, deliveries, provider_receipts
from topslot.store.tracking_events import suppress_addresses

log = get_logger("topslot.store")

PENDING_TTL = timedelta(days=2)  # a parked receipt whose row never shows up (its send ended `unknown`)
MAX_PENDING = 100_000  # parked receipts kept at most; beyond, a new one is dropped (and logged)
IDS_PER_QUERY = 1000
_PG_RECEIPTS_LOCK = 0x7470_7263_7074  # "tprcpt": parking a receipt vs. applying parked ones


class Result(StrEnum):
    APPLIED = "applied"  # the sent row became delivered | bounced
    REPEAT = "repeat"  # the row already had a final receipt: the first one stays
    NOT_SENT = "not_sent"  # the row is in another state (failed, unknown, ...): left alone
    PENDING = "pending"  # no row has this provider id yet: parked until it is recorded
    DROPPED = "dropped"  # no row yet and the parking table is full
    UNMATCHED = "unmatched"  # (by delivery id) no such row, or another provider's or channel's row


@dataclass(frozen=True, slots=True)
class Receipt:
    provider: str  # "twilio"
    provider_id: str  # deliveries.provider_id (the Twilio message SID)
    state: S  # one of RECEIPTS
    error: str | None = None  # the bounce's last_error, e.g. "30005 unknown destination handset"
    suppress: str | None = None  # suppression reason for the row's address (not keyed channels), if any
    source: str | None = None  # the suppression's source

    def __post_init__(self) -> None:
        if self.state not in RECEIPTS:
            raise ValueError(f"a receipt is {' or '.join(sorted(RECEIPTS))}, not {self.state}")
        if not self.provider_id:
            raise ValueError("a receipt needs the provider's id")


@dataclass(frozen=True, slots=True)
class Recorded:
    result: Result
    delivery_id: int | None = None
    suppressed: int = 0  # suppression rows added now


async def record_receipt(engine: AsyncEngine, receipt: Receipt, now: datetime) -> Recorded:
    """Apply a receipt to its ledger row, or park it until the row is recorded; one committed
    transaction. Idempotent."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        done = await _apply(conn, receipt, now)
        if done is not None:
            return done
        await _lock(conn, shared=False)  # PostgreSQL: wait for chunks being recorded right now
        done = await _apply(conn, receipt, now)
        if done is not None:
            return done
        return await _park(conn, receipt, now)


async def record_delivery_receipt(
    engine: AsyncEngine, delivery_id: int, channel: str, receipt: Receipt, now: datetime
) -> Recorded:
    """A receipt that names the ledger row itself (an IM gateway's callback with our delivery id):
    applied through the row's provider id when the row is ``channel``'s and was taken by
    ``receipt.provider``; while the row has no provider id yet (its send has not been recorded), parked
    under ``receipt.provider_id`` (the id the row will get) like ``record_receipt``. Another provider's
    or channel's row, or none: ``UNMATCHED``, nothing changes. One committed transaction; idempotent."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        for attempt in range(2):
            row = (
                await conn.execute(
                    select(deliveries.c.channel, deliveries.c.provider, deliveries.c.provider_id).where(
                        deliveries.c.id == delivery_id
                    )
                )
            ).first()
            if row is None or row.channel != channel or row.provider not in (None, receipt.provider):
                return Recorded(Result.UNMATCHED)
            if row.provider_id and row.provider == receipt.provider:
                recorded = replace(receipt, provider_id=row.provider_id)
                done = await _apply(conn, recorded, now)
                return done if done is not None else Recorded(Result.UNMATCHED)
            if attempt == 0:
                await _lock(conn, shared=False)  # PostgreSQL: wait for chunks being recorded right now
        # the id the row will get is unknown (the gateway may answer its own): wait under the row's key
        return await _park(conn, replace(receipt, provider_id=delivery_key(delivery_id)), now)


def delivery_key(delivery_id: int) -> str:
    """The parking key of a receipt that names its row by delivery id (not by a provider id)."""
    return f"delivery:{delivery_id}"


async def apply_pending(
    conn: AsyncConnection, provider_ids: Iterable[str | None], now: datetime, delivery_ids: Iterable[int] = ()
) -> int:
    """Inside the transaction that has just recorded these provider ids (``record_outcomes``): apply
    the receipts that were waiting for them, and those that named these deliveries by id (applied
    through the provider id each row now has). Returns how many were applied."""
    ids = sorted({p for p in provider_ids if p})
    keys = {delivery_key(d): d for d in set(delivery_ids)}
    if not ids and not keys:
        return 0
    await _lock(conn, shared=True)
    applied = 0
    parked = await _parked(conn, sorted({*ids, *keys}))  # one look-up for both kinds (almost always none)
    by_provider_id, unparked = set(ids), set()
    for receipt in [r for r in parked if r.provider_id in by_provider_id]:
        if await _apply(conn, receipt, now) is not None:  # the row exists (in whatever state): done with it
            await _unpark(conn, receipt.provider_id)
            unparked.add(receipt.provider_id)
            applied += 1
    # named by delivery id: through the row's provider id (those unparked just now are gone)
    for receipt in [r for r in parked if r.provider_id in keys and r.provider_id not in unparked]:
        await _unpark(conn, receipt.provider_id)
        stmt = select(deliveries.c.provider, deliveries.c.provider_id).where(
            deliveries.c.id == keys[receipt.provider_id]
        )
        row = (await conn.execute(stmt)).first()
        if row is not None and row.provider == receipt.provider and row.provider_id:
            if await _apply(conn, replace(receipt, provider_id=row.provider_id), now) is not None:
                applied += 1
    if applied:
        log.info("provider_receipts_applied", receipts=applied)
    return applied


async def _parked(conn: AsyncConnection, keys: list[str]) -> list[Receipt]:
    """The parked receipts under these keys. Almost always there are none at all: one constant
    statement says so, instead of a look-up under a list of keys (a chunk's: 100-200 of them)."""
    if not keys or not (await conn.execute(_ANY_PARKED)).scalar():
        return []
    found: list[Receipt] = []
    for start in range(0, len(keys), IDS_PER_QUERY):
        result = await conn.execute(_PARKED, {"keys": keys[start : start + IDS_PER_QUERY]})
        found.extend(_receipt(row) for row in result.mappings())
    return found


_ANY_PARKED = select(exists().select_from(provider_receipts))
_PARKED = select(provider_receipts).where(provider_receipts.c.provider_id.in_(bindparam("keys", expanding=True)))


async def purge_pending(conn: AsyncConnection, now: datetime) -> int:
    """Drop parked receipts older than ``PENDING_TTL`` (their row never got the provider id)."""
    result = await conn.execute(delete(provider_receipts).where(provider_receipts.c.received_at < now - PENDING_TTL))
    purged = result.rowcount or 0
    if purged:
        log.info("provider_receipts_purged", receipts=purged, older_than_h=PENDING_TTL.total_seconds() / 3600)
    return purged


async def pending_receipts(engine: AsyncEngine) -> list[Receipt]:
    """The parked receipts, oldest first (tests, support)."""
    stmt = select(provider_receipts).order_by(provider_receipts.c.received_at, provider_receipts.c.provider_id)
    async with engine.connect() as conn:
        return [_receipt(row) for row in (await conn.execute(stmt)).mappings()]


# ---------------------------------------------------------------- inside


async def _apply(conn: AsyncConnection, receipt: Receipt, now: datetime) -> Recorded | None:
    """The receipt applied to its row(s); None when no row has its provider id (yet)."""
    values: dict[str, Any] = {"state": receipt.state, "updated_at": now}
    if receipt.state == S.BOUNCED:
        values["last_error"] = receipt.error
    stmt = (
        update(deliveries)
        .where(deliveries.c.provider_id == receipt.provider_id, deliveries.c.state == S.SENT)
        .values(**values)
        .returning(deliveries.c.id, deliveries.c.contact_id, deliveries.c.channel)
    )
    changed = (await conn.execute(stmt)).all()
    if not changed:
        state = await conn.scalar(
            select(deliveries.c.state).where(deliveries.c.provider_id == receipt.provider_id).limit(1)
        )
        if state is None:
            return None
        return Recorded(Result.REPEAT if state in RECEIPTS else Result.NOT_SENT)
    suppressed = 0
    if receipt.suppress:
        for row in changed:
            suppressed += await _suppress(conn, row.channel, row.contact_id, receipt, now)
    return Recorded(Result.APPLIED, delivery_id=changed[0].id, suppressed=suppressed)


async def _suppress(conn: AsyncConnection, channel: str, contact_id: int, receipt: Receipt, now: datetime) -> int:
    """The row's address on its channel goes on the suppression list (a keyed IM address is left alone:
    a receipt cannot say which network's id it was about)."""
    spec = spec_of(channel)
    if spec.keyed or not receipt.suppress:
        return 0
    contact = (await conn.execute(select(contacts.c[spec.contact_field]).where(contacts.c.id == contact_id))).first()
    address = spec.address(contact._mapping) if contact is not None else None
    if not address:
        return 0
    return await suppress_addresses(conn, channel, [address], receipt.suppress, receipt.source, now)


async def _park(conn: AsyncConnection, receipt: Receipt, now: datetime) -> Recorded:
    await purge_pending(conn, now)
    waiting = await conn.scalar(select(func.count()).select_from(provider_receipts))
    if (waiting or 0) >= MAX_PENDING:
        return Recorded(Result.DROPPED)
    stmt = (
        upsert_insert(conn, provider_receipts)
        .values(
            provider_id=receipt.provider_id,
            provider=receipt.provider,
            state=receipt.state,
            error=(receipt.error or "")[:200] or None,
            suppress=receipt.suppress,
            source=(receipt.source or "")[:200] or None,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=[provider_receipts.c.provider_id])  # the first final one stays
    )
    await conn.execute(stmt)
    return Recorded(Result.PENDING)


async def _unpark(conn: AsyncConnection, key: str) -> None:
    await conn.execute(delete(provider_receipts).where(provider_receipts.c.provider_id == key))


async def _lock(conn: AsyncConnection, *, shared: bool) -> None:
    """PostgreSQL: the receipts' transaction advisory lock (SQLite writers are already serialised)."""
    if conn.dialect.name != "postgresql":
        return
    lock = func.pg_advisory_xact_lock_shared if shared else func.pg_advisory_xact_lock
    await conn.execute(select(lock(_PG_RECEIPTS_LOCK)))


def _receipt(r: RowMapping) -> Receipt:
    return Receipt(
        provider=r["provider"],
        provider_id=r["provider_id"],
        state=S(r["state"]),
        error=r["error"],
        suppress=r["suppress"],
        source=r["source"],
    )
