"""Campaign versions in the database (``topslot.campaign_version`` says what a version is and which wins).

- The version in force is kept on the campaign's row: ``config_hash`` (the content hash),
  ``content_mtime`` and ``recorded_by`` (the process that recorded it). ``record`` writes a node's
  version there only if it wins over the one in force, judged in one transaction with the row
  locked, so two nodes recording at once end with the winner whatever their order.
- ``campaign_versions`` keeps which version each daemon process (``processes.owner``) holds, so
  ``topslot status`` can show who holds another one (``holders``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.campaign import Campaign
from topslot.campaign_version import CampaignVersion, Standing, judge
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import upsert_insert
from topslot.store.schema import campaign_versions, campaigns, processes


@dataclass(frozen=True, slots=True)
class InForce:
    """The version in force of a campaign, and the process that recorded it (None: unknown)."""

    version: CampaignVersion
    recorded_by: str | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record`` found in force (None: the campaign was new) and what is in force now."""

    before: InForce | None
    after: InForce

    @property
    def replaced(self) -> bool:
        """This call replaced another version in force."""
        return self.before is not None and self.before.version.digest != self.after.version.digest


async def record(
    engine: AsyncEngine, campaign: Campaign, version: CampaignVersion, now: datetime, *, by: str | None = None
) -> Recorded:
    """Insert or refresh the campaign's row (the ledger's foreign key points at it) with ``version``
    as the version in force if it wins (``judge``): nothing in force yet, or it wins over the one
    in force. The same version refreshes the name and ``loaded_at`` (keeping who recorded it first);
    a version that loses changes nothing. ``by``: the recording process (``processes.owner``)."""
    values = {
        "id": campaign.id, "name": campaign.name, "config_hash": version.digest, "content_mtime": version.mtime,
        "recorded_by": by, "loaded_at": now,
    }  # fmt: skip
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        inserted = await conn.execute(
            upsert_insert(conn, campaigns).values(**values).on_conflict_do_nothing(index_elements=[campaigns.c.id])
            .returning(campaigns.c.id)
        )  # fmt: skip
        if inserted.first() is not None:
            return Recorded(None, InForce(version, by))
        before = (await _read(conn, [campaign.id], lock=True))[campaign.id]
        standing = judge(version, before.version)
        if standing is Standing.HELD:
            return Recorded(before, before)
        if standing is Standing.IN_FORCE:
            del values["config_hash"], values["content_mtime"], values["recorded_by"]
        await conn.execute(update(campaigns).where(campaigns.c.id == campaign.id).values(**values))
    return Recorded(before, before if standing is Standing.IN_FORCE else InForce(version, by))


async def in_force(engine: AsyncEngine, campaign_ids: Sequence[str]) -> dict[str, InForce]:
    """The version in force of each of ``campaign_ids`` that has a row."""
    async with engine.connect() as conn:
        return await _read(conn, campaign_ids)


async def _read(conn: AsyncConnection, campaign_ids: Sequence[str], *, lock: bool = False) -> dict[str, InForce]:
    query = select(campaigns.c.id, campaigns.c.config_hash, campaigns.c.content_mtime, campaigns.c.recorded_by).where(
        campaigns.c.id.in_(campaign_ids)
    )
    if lock:  # PostgreSQL: held until the transaction ends (SQLite's BEGIN IMMEDIATE already serialises)
        query = query.with_for_update()
    return {
        r.id: InForce(CampaignVersion(r.config_hash, r.content_mtime), r.recorded_by) for r in await conn.execute(query)
    }


async def hold(engine: AsyncEngine, owner: str, held: Mapping[str, CampaignVersion], now: datetime) -> None:
    """Record that process ``owner`` holds ``held`` (campaign id → its version there), and nothing
    else; rows of processes that stopped or were found dead are dropped on the way."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await conn.execute(
            delete(campaign_versions).where(
                campaign_versions.c.owner == owner, campaign_versions.c.campaign_id.not_in(sorted(held))
            )
        )
        gone = select(processes.c.owner).where(processes.c.stopped_at.is_not(None) | processes.c.dead_at.is_not(None))
        await conn.execute(delete(campaign_versions).where(campaign_versions.c.owner.in_(gone)))
        for campaign_id, version in sorted(held.items()):
            values = {"content_hash": version.digest, "content_mtime": version.mtime, "seen_at": now}
            stmt = upsert_insert(conn, campaign_versions).values(owner=owner, campaign_id=campaign_id, **values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[campaign_versions.c.owner, campaign_versions.c.campaign_id], set_=values
            )
            await conn.execute(stmt)


@dataclass(frozen=True, slots=True)
class Holder:
    """A running process holding another version of a campaign than the one in force."""

    campaign_id: str
    owner: str
    node: str
    version: str  # its content hash
    mtime: datetime | None


async def holders(engine: AsyncEngine, now: datetime, dead_after: timedelta) -> list[Holder]:
    """Every running process (a heartbeat within ``dead_after``, neither stopped nor found dead)
    whose version of a campaign differs from the one in force, by campaign and owner."""
    query = (
        select(
            campaign_versions.c.campaign_id, campaign_versions.c.owner, processes.c.node,
            campaign_versions.c.content_hash, campaign_versions.c.content_mtime,
        )
        .join(processes, processes.c.owner == campaign_versions.c.owner)
        .join(campaigns, campaigns.c.id == campaign_versions.c.campaign_id)
        .where(
            processes.c.stopped_at.is_(None),
            processes.c.dead_at.is_(None),
            processes.c.last_heartbeat_utc >= now - dead_after,
            campaign_versions.c.content_hash != campaigns.c.config_hash,
        )
        .order_by(campaign_versions.c.campaign_id, campaign_versions.c.owner)
    )  # fmt: skip
    async with engine.connect() as conn:
        rows = await conn.execute(query)
        return [Holder(r.campaign_id, r.owner, r.node, r.content_hash, r.content_mtime) for r in rows]
