"""What ``topslot status`` reads, all from the database (so it works on any node while daemons run):
process heartbeats, campaigns with their control state, version in force (and the running processes
holding another) and next buckets, rows in flight per lease owner, recent failures and recent
buckets' lateness. Also the writes behind it: each process's
heartbeat (``processes``) and each finished bucket's result (``bucket_runs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.delivery import DeliveryState as S
from topslot.store.controls import ControlState, state_of
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import upsert_insert
from topslot.store.ledger import planned_buckets_query
from topslot.store.schema import bucket_runs, campaign_controls, campaigns, deliveries, processes
from topslot.store.versions import Holder, holders

RECENT = timedelta(hours=24)  # failures and bucket results shown
NEXT_BUCKETS = 3  # per campaign
ERROR_CHARS = 120


# ---------------------------------------------------------------- writes


async def heartbeat(
    engine: AsyncEngine, *, owner: str, node: str, role: str, pid: int, version: str, started_at: datetime,
    now: datetime,
) -> bool:  # fmt: skip
    """Insert or refresh this process's row; False (nothing written) when another node has found the
    process dead meanwhile (``declare_dead``): it must not come back under this identity."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        stmt = upsert_insert(conn, processes).values(
            owner=owner, node=node, role=role, pid=pid, version=version, started_at=started_at,
            last_heartbeat_utc=now, stopped_at=None,
        )  # fmt: skip
        stmt = stmt.on_conflict_do_update(
            index_elements=[processes.c.owner],
            set_={"last_heartbeat_utc": now, "stopped_at": None},
            where=processes.c.dead_at.is_(None),
        ).returning(processes.c.owner)
        return (await conn.execute(stmt)).first() is not None


async def declare_dead(engine: AsyncEngine, now: datetime, *, timeout: timedelta) -> list[ProcessRow]:
    """Find dead the processes whose heartbeat is older than ``timeout`` and that did not stop
    gracefully: ``dead_at`` is set, by exactly one caller (the rows returned: it logs them). Their
    rows are then taken back (``dead_owners``, ``topslot.store.dispatch.held_by``)."""
    stmt = (
        update(processes)
        .where(
            processes.c.dead_at.is_(None),
            processes.c.stopped_at.is_(None),
            processes.c.last_heartbeat_utc < now - timeout,
        )
        .values(dead_at=now)
        .returning(*processes.c)
    )
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        return [_process(r, now) for r in await conn.execute(stmt)]


async def stopped_since(engine: AsyncEngine, since: datetime) -> set[str]:
    """The processes that stopped gracefully after ``since`` (their unsent rows went back to
    ``planned``: somebody must fire their buckets again)."""
    query = select(processes.c.owner).where(processes.c.stopped_at > since)
    async with engine.connect() as conn:
        return set((await conn.execute(query)).scalars())


async def dead_owners(engine: AsyncEngine, now: datetime, *, window: timedelta) -> set[str]:
    """The processes found dead within ``window`` (a lease: older ones' leases have run out anyway)."""
    query = select(processes.c.owner).where(processes.c.dead_at > now - window)
    async with engine.connect() as conn:
        return set((await conn.execute(query)).scalars())


async def stopped(engine: AsyncEngine, owner: str, now: datetime) -> None:
    """A graceful stop: the process is shown as stopped, not stale."""
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await conn.execute(
            update(processes).where(processes.c.owner == owner).values(stopped_at=now, last_heartbeat_utc=now)
        )


async def record_bucket(
    engine: AsyncEngine, *, campaign_id: str, channel: str, due_utc: datetime, owner: str, claimed: int,
    accepted: int | None, late: int | None, max_late_s: float | None, started_at: datetime, finished_at: datetime,
) -> None:  # fmt: skip
    """What a bucket's send came to (the last firing of a bucket wins)."""
    values = {
        "owner": owner, "claimed": claimed, "accepted": accepted, "late": late,
        "max_late_ms": None if max_late_s is None else round(max_late_s * 1000),
        "started_at": started_at, "finished_at": finished_at,
    }  # fmt: skip
    key = {"campaign_id": campaign_id, "channel": channel, "due_utc": due_utc}
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        stmt = upsert_insert(conn, bucket_runs).values(**key, **values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[bucket_runs.c.campaign_id, bucket_runs.c.channel, bucket_runs.c.due_utc], set_=values
        )
        await conn.execute(stmt)


# ---------------------------------------------------------------- reads


@dataclass(frozen=True, slots=True)
class ProcessRow:
    owner: str
    node: str
    role: str
    pid: int
    version: str
    started_at: datetime
    last_heartbeat_utc: datetime
    stopped_at: datetime | None
    health: str  # running | dead (no heartbeat for the node timeout, or found dead) | stopped
    heartbeat_age_s: float
    dead_at: datetime | None = None  # when another node found it dead and took its rows back


def _process(r: Any, now: datetime, dead_after: timedelta | None = None) -> ProcessRow:
    age = (now - r.last_heartbeat_utc).total_seconds()
    if r.stopped_at is not None:
        health = "stopped"
    elif r.dead_at is not None or (dead_after is not None and age > dead_after.total_seconds()):
        health = "dead"
    else:
        health = "running"
    return ProcessRow(r.owner, r.node, r.role, r.pid, r.version, r.started_at, r.last_heartbeat_utc, r.stopped_at,
                      health, round(age, 1), r.dead_at)  # fmt: skip


@dataclass(frozen=True, slots=True)
class NextBucket:
    channel: str
    due_utc: datetime
    dispatch_start_utc: datetime
    rows: int


@dataclass(slots=True)
class CampaignRow:
    id: str
    name: str
    state: ControlState
    since: datetime | None  # paused_at / cancelled_at
    reason: str | None
    version: str  # the version in force: its content hash (``topslot.campaign_version``)
    version_mtime: datetime | None  # the newest mtime of its files (None: a campaign given in code)
    version_by: str | None  # the process that recorded it
    rows: dict[str, int] = field(default_factory=dict)  # state → rows
    next_buckets: list[NextBucket] = field(default_factory=list)
    other_versions: list[Holder] = field(default_factory=list)  # running processes holding another version


@dataclass(frozen=True, slots=True)
class InFlight:
    owner: str | None
    campaign_id: str
    state: str
    rows: int
    lease_expires_utc: datetime | None  # the soonest


@dataclass(frozen=True, slots=True)
class Failure:
    campaign_id: str
    channel: str
    state: str
    error: str | None
    rows: int
    last_at: datetime


@dataclass(frozen=True, slots=True)
class BucketResult:
    campaign_id: str
    channel: str
    due_utc: datetime
    owner: str
    claimed: int
    accepted: int | None
    late: int | None
    max_late_s: float | None
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class ControlEvent:
    campaign_id: str
    action: str
    reason: str | None
    actor: str
    rows: int
    at: datetime


@dataclass(slots=True)
class Status:
    now: datetime
    processes: list[ProcessRow]
    campaigns: list[CampaignRow]
    in_flight: list[InFlight]
    failures: list[Failure]
    buckets: list[BucketResult]
    controls: list[ControlEvent]


def _aware(value: datetime | None) -> datetime | None:
    # aggregates (MIN/MAX) bypass the column type on SQLite
    if value is None or isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC)


def _clip(error: str | None) -> str | None:
    if error is None:
        return None
    line = " ".join(error.split())
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 1] + "…"


async def campaign_rows(
    engine: AsyncEngine, now: datetime, campaign_id: str | None = None, *, dead_after: timedelta
) -> list[CampaignRow]:
    """Every campaign in the database: control state, version in force and the running processes
    (not dead: a heartbeat within ``dead_after``) that hold another, rows per state, its next planned buckets."""
    query = select(
        campaigns.c.id, campaigns.c.name, campaigns.c.paused, campaigns.c.paused_at, campaigns.c.cancelled_at,
        campaigns.c.control_reason, campaigns.c.config_hash, campaigns.c.content_mtime, campaigns.c.recorded_by,
    ).order_by(campaigns.c.id)  # fmt: skip
    counts = select(deliveries.c.campaign_id, deliveries.c.state, func.count()).group_by(
        deliveries.c.campaign_id, deliveries.c.state
    )
    buckets = planned_buckets_query(campaign_id).order_by("due_utc", "channel")
    if campaign_id is not None:
        query = query.where(campaigns.c.id == campaign_id)
        counts = counts.where(deliveries.c.campaign_id == campaign_id)
    async with engine.connect() as conn:
        found = {
            r.id: CampaignRow(
                r.id, r.name, state_of(r.paused, r.cancelled_at), r.cancelled_at or r.paused_at, r.control_reason,
                r.config_hash, r.content_mtime, r.recorded_by,
            )
            for r in await conn.execute(query)
        }  # fmt: skip
        for cid, state, n in await conn.execute(counts):
            if cid in found:
                found[cid].rows[state] = n
        for r in await conn.execute(buckets):
            row = found.get(r.campaign_id)
            if row is not None and len(row.next_buckets) < NEXT_BUCKETS:
                row.next_buckets.append(NextBucket(r.channel, _aware(r.due_utc), _aware(r.start), r.n))  # type: ignore[arg-type]
    for holder in await holders(engine, now, dead_after):
        if holder.campaign_id in found:
            found[holder.campaign_id].other_versions.append(holder)
    return list(found.values())


async def read_status(engine: AsyncEngine, now: datetime, *, dead_after: timedelta) -> Status:
    since = now - RECENT
    async with engine.connect() as conn:
        procs = []
        for r in await conn.execute(
            select(processes)
            .where(processes.c.last_heartbeat_utc >= since)  # the living, and who stopped or died in a day
            .order_by(processes.c.node, processes.c.owner)
        ):
            procs.append(_process(r, now, dead_after))
        flying = [
            InFlight(r.lease_owner, r.campaign_id, r.state, r.n, _aware(r.expires))
            for r in await conn.execute(
                select(
                    deliveries.c.lease_owner,
                    deliveries.c.campaign_id,
                    deliveries.c.state,
                    func.count().label("n"),
                    func.min(deliveries.c.lease_expires_utc).label("expires"),
                )
                .where(deliveries.c.state.in_((S.CLAIMED, S.SENDING)))
                .group_by(deliveries.c.lease_owner, deliveries.c.campaign_id, deliveries.c.state)
                .order_by(deliveries.c.lease_owner, deliveries.c.campaign_id, deliveries.c.state)
            )  # fmt: skip
        ]
        failures = [
            Failure(r.campaign_id, r.channel, r.state, _clip(r.last_error), r.n, _aware(r.last_at))  # type: ignore[arg-type]
            for r in await conn.execute(
                select(
                    deliveries.c.campaign_id,
                    deliveries.c.channel,
                    deliveries.c.state,
                    deliveries.c.last_error,
                    func.count().label("n"),
                    func.max(deliveries.c.updated_at).label("last_at"),
                )
                .where(deliveries.c.state.in_((S.FAILED, S.UNKNOWN)), deliveries.c.updated_at >= since)
                .group_by(
                    deliveries.c.campaign_id,
                    deliveries.c.channel,
                    deliveries.c.state,
                    deliveries.c.last_error,
                )
                .order_by(func.count().desc())
                .limit(20)
            )  # fmt: skip
        ]
        results = [
            BucketResult(
                r.campaign_id,
                r.channel,
                r.due_utc,
                r.owner,
                r.claimed,
                r.accepted,
                r.late,
                None if r.max_late_ms is None else r.max_late_ms / 1000,
                r.started_at,
                r.finished_at,
            )  # fmt: skip
            for r in await conn.execute(
                select(bucket_runs)
                .where(bucket_runs.c.finished_at >= since)
                .order_by(bucket_runs.c.due_utc.desc())
                .limit(20)
            )  # fmt: skip
        ]
        controls = [
            ControlEvent(r.campaign_id, r.action, r.reason, r.actor, r.rows, r.at)
            for r in await conn.execute(
                select(campaign_controls)
                .order_by(campaign_controls.c.at.desc(), campaign_controls.c.id.desc())
                .limit(10)
            )
        ]
    return Status(
        now, procs, await campaign_rows(engine, now, dead_after=dead_after), flying, failures, results, controls
    )
