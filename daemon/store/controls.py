"""Campaign controls in the database: pause, resume, cancel (``topslot campaigns``).

The state lives on the ``campaigns`` row, so it survives restarts and every node sees it; every
control is recorded in ``campaign_controls`` (who, when, why). They are plain database writes: they
work whether or not a daemon runs, and a running daemon reads the state where it acts:

- ``claim_all`` checks it before each claim batch: a pause stops claiming within one batch on every
  node, the rows not yet claimed stay ``planned``; rows already claimed finish;
- the scheduler checks it when a bucket fires (a held bucket fires nothing), and skips planning a
  cancelled campaign; the retry poller claims no ``retry_wait`` row of a paused or cancelled one;
- a cancel retires the campaign's unsent rows (``planned``, ``retry_wait``) as ``skipped`` /
  ``cancelled`` and gives back their reserved coupon codes, in one transaction. ``cancelled`` is not
  a plan's skip reason, so no later plan revives those rows.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, exists, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.delivery import DeliveryState as S
from topslot.delivery import SkipReason as R
from topslot.store import coupons
from topslot.store.db import IMMEDIATE
from topslot.store.schema import campaign_controls, campaigns, deliveries

REASON_MAX = 200


class ControlState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"


class ControlRefused(Exception):
    """The control cannot apply (unknown campaign, resuming a cancelled one): one line for the CLI."""


@dataclass(frozen=True, slots=True)
class Control:
    """The outcome of one control: the state now, whether it changed, rows a cancel retired."""

    campaign_id: str
    state: ControlState
    changed: bool
    rows: int = 0
    coupons_released: int = 0


def actor() -> str:
    """Who runs this command: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:100]


def state_of(paused: bool, cancelled_at: datetime | None) -> ControlState:
    if cancelled_at is not None:
        return ControlState.CANCELLED
    return ControlState.PAUSED if paused else ControlState.ACTIVE


def held_campaign() -> Any:
    """SQL: the campaign of the ``deliveries`` row is paused or cancelled (nothing of it is claimed)."""
    return exists().where(
        campaigns.c.id == deliveries.c.campaign_id,
        or_(campaigns.c.paused.is_(True), campaigns.c.cancelled_at.is_not(None)),
    )


async def campaign_state(engine: AsyncEngine | AsyncConnection, campaign_id: str) -> ControlState:
    """The campaign's control state; a campaign not in the database is ``active``."""
    query = select(campaigns.c.paused, campaigns.c.cancelled_at).where(campaigns.c.id == campaign_id)
    if isinstance(engine, AsyncConnection):
        row = (await engine.execute(query)).first()
    else:
        async with engine.connect() as conn:
            row = (await conn.execute(query)).first()
    return ControlState.ACTIVE if row is None else state_of(row.paused, row.cancelled_at)


async def campaign_states(engine: AsyncEngine, ids: Sequence[str]) -> dict[str, ControlState]:
    """Control state of each of ``ids`` found in the database (one query)."""
    if not ids:
        return {}
    query = select(campaigns.c.id, campaigns.c.paused, campaigns.c.cancelled_at).where(campaigns.c.id.in_(list(ids)))
    async with engine.connect() as conn:
        return {r.id: state_of(r.paused, r.cancelled_at) for r in await conn.execute(query)}


async def _current(conn: AsyncConnection, campaign_id: str) -> ControlState:
    row = (
        await conn.execute(select(campaigns.c.paused, campaigns.c.cancelled_at).where(campaigns.c.id == campaign_id))
    ).first()
    if row is None:
        raise ControlRefused(
            f"campaign {campaign_id!r} is not in the database (the daemon records a campaign when it first plans it)"
        )
    return state_of(row.paused, row.cancelled_at)


async def _record(
    conn: AsyncConnection, campaign_id: str, action: str, reason: str | None, who: str, now: datetime, rows: int = 0
) -> None:
    await conn.execute(
        insert(campaign_controls).values(
            campaign_id=campaign_id, action=action, reason=_clip(reason), actor=who, rows=rows, at=now
        )
    )


def _clip(reason: str | None) -> str | None:
    return None if reason is None else " ".join(reason.split())[:REASON_MAX] or None


async def pause(
    engine: AsyncEngine, campaign_id: str, *, now: datetime, reason: str | None = None, who: str | None = None
) -> Control:
    """Stop claiming the campaign's rows; they stay ``planned``. Pausing a paused campaign changes nothing."""
    return await _set_paused(engine, campaign_id, True, now=now, reason=reason, who=who)


async def resume(
    engine: AsyncEngine, campaign_id: str, *, now: datetime, reason: str | None = None, who: str | None = None
) -> Control:
    """Claim the campaign's rows again. Buckets whose time passed meanwhile follow the missed-slot
    rules when the daemon re-plans the campaign (it does on noticing the resume)."""
    return await _set_paused(engine, campaign_id, False, now=now, reason=reason, who=who)


async def _set_paused(
    engine: AsyncEngine, campaign_id: str, paused: bool, *, now: datetime, reason: str | None, who: str | None
) -> Control:
    """Pause (``paused``) or resume a campaign that is not cancelled, recorded in ``campaign_controls``."""
    wanted = ControlState.PAUSED if paused else ControlState.ACTIVE
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        state = await _current(conn, campaign_id)
        if state is ControlState.CANCELLED:
            why = "there is nothing left to pause" if paused else "a cancel cannot be undone"
            raise ControlRefused(f"campaign {campaign_id!r} is cancelled: {why}")
        if state is wanted:
            return Control(campaign_id, state, changed=False)
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(paused=paused, paused_at=now if paused else None, control_reason=_clip(reason) if paused else None)
        )
        await _record(conn, campaign_id, "pause" if paused else "resume", reason, who or actor(), now)
    return Control(campaign_id, wanted, changed=True)


async def cancel(
    engine: AsyncEngine, campaign_id: str, *, now: datetime, reason: str | None = None, who: str | None = None
) -> Control:
    """Retire the campaign for good: its unsent rows become ``skipped`` / ``cancelled`` and their
    reserved coupon codes are released; rows in flight finish. Idempotent: cancelling again retires
    rows that came back to ``planned`` since (a recovered lease) and records nothing else."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        state = await _current(conn, campaign_id)
        changed = state is not ControlState.CANCELLED
        if changed:
            await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(paused=False, cancelled_at=now, control_reason=_clip(reason))
            )
        rows, released = await _retire(conn, campaign_id, now)
        if changed or rows:
            await _record(conn, campaign_id, "cancel", reason, who or actor(), now, rows)
    return Control(campaign_id, ControlState.CANCELLED, changed=changed, rows=rows, coupons_released=released)


async def retire_cancelled(engine: AsyncEngine, campaign_id: str, now: datetime) -> int:
    """The unsent rows of a cancelled campaign that are still waiting (given back by a recovered
    lease after the cancel): ``skipped`` / ``cancelled`` too. What a held bucket of it does."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        if await campaign_state(conn, campaign_id) is not ControlState.CANCELLED:
            return 0
        rows, _ = await _retire(conn, campaign_id, now)
    return rows


async def _retire(conn: AsyncConnection, campaign_id: str, now: datetime) -> tuple[int, int]:
    stmt = (
        update(deliveries)
        .where(
            and_(deliveries.c.campaign_id == campaign_id, deliveries.c.state.in_((S.PLANNED, S.RETRY_WAIT))),
        )
        .values(
            state=S.SKIPPED,
            skip_reason=literal(R.CANCELLED),
            lease_owner=None,
            lease_expires_utc=None,
            next_attempt_utc=None,
            updated_at=now,
        )
        .returning(deliveries.c.contact_id)
    )
    contact_ids = [r.contact_id for r in await conn.execute(stmt)]
    released = await coupons.release(conn, campaign_id, contact_ids, now) if contact_ids else 0
    return len(contact_ids), released
