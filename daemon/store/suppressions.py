"""The suppression list by hand: ``topslot suppressions import | add | remove | export``.

Rows are written as every opt-out writes them (``tracking_events.suppress_addresses``): one row per
(channel, address), an address already there keeps its first reason, so a re-import adds nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.channel import spec_of
from topslot.delivery import SuppressionReason
from topslot.imports.report import ImportReport, Progress
from topslot.imports.suppressions import SuppressionRow, suppression_rows
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import upsert_insert
from topslot.store.schema import suppressions

DEFAULT_BATCH_SIZE = 2000

RECIPIENT_REASONS = frozenset(
    {
        SuppressionReason.UNSUBSCRIBE,
        SuppressionReason.SMS_STOP,
        SuppressionReason.IM_BLOCKED,
        SuppressionReason.FORGOTTEN,
    }
)
"""Suppressions the recipient asked for: ``suppressions remove`` lifts them only with ``--force``."""


@dataclass(frozen=True, slots=True)
class StoredSuppression:
    channel: str
    address: str
    reason: str
    source: str | None
    created_at: datetime


async def import_suppressions(
    engine: AsyncEngine,
    path: Path,
    *,
    now: datetime,
    channel: str | None,
    reason: str,
    source: str | None,
    default_country: str | None,
    encoding: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> ImportReport:
    """Add every good row of the file; ``imported``: rows added, ``ignored``: already suppressed
    (or repeated in the file). ``progress`` is called with the rows read so far after each batch."""
    report = ImportReport()
    writer = engine.execution_options(**IMMEDIATE)
    batch: list[SuppressionRow] = []
    read = 0
    for row in suppression_rows(
        path, channel=channel, reason=reason, source=source, default_country=default_country, encoding=encoding
    ):
        read += 1
        if isinstance(row, list):
            report.reject(row)
            continue
        batch.append(row)
        if len(batch) >= batch_size:
            await _flush(writer, batch, now, report)
            batch = []
            if progress is not None:
                progress(read)
    if batch:
        await _flush(writer, batch, now, report)
    if progress is not None:
        progress(read)
    report.problems.sort()
    return report


async def _flush(engine: AsyncEngine, rows: list[SuppressionRow], now: datetime, report: ImportReport) -> None:
    unique: dict[tuple[str, str], SuppressionRow] = {}
    for row in rows:
        unique.setdefault((row.channel, row.address), row)
    async with engine.begin() as conn:
        added = await _insert(conn, list(unique.values()), now)
    report.imported += added
    report.ignored += len(rows) - added


async def _insert(conn: AsyncConnection, rows: list[SuppressionRow], now: datetime) -> int:
    if not rows:
        return 0
    values: list[dict[str, Any]] = [
        {"channel": r.channel, "address": r.address, "reason": r.reason, "source": r.source, "created_at": now}
        for r in rows
    ]
    stmt = (
        upsert_insert(conn, suppressions)
        .values(values)
        .on_conflict_do_nothing(index_elements=[suppressions.c.channel, suppressions.c.address])
        .returning(suppressions.c.id)
    )
    return len((await conn.execute(stmt)).all())


async def add_suppression(
    engine: AsyncEngine, channel: str, address: str, *, reason: str, source: str | None, now: datetime
) -> StoredSuppression:
    """Suppress one address (already normalised by ``normalise_address``); an address already on
    the list keeps its first reason. Returns the stored row."""
    row = SuppressionRow(0, channel, spec_of(channel).suppression_address(address), reason, source)
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await _insert(conn, [row], now)
        stored = await _get(conn, channel, row.address)
    assert stored is not None
    return stored


async def find_suppression(engine: AsyncEngine, channel: str, address: str) -> StoredSuppression | None:
    async with engine.connect() as conn:
        return await _get(conn, channel, spec_of(channel).suppression_address(address))


async def _get(conn: AsyncConnection, channel: str, address: str) -> StoredSuppression | None:
    stmt = select(
        suppressions.c.channel,
        suppressions.c.address,
        suppressions.c.reason,
        suppressions.c.source,
        suppressions.c.created_at,
    ).where(suppressions.c.channel == channel, suppressions.c.address == address)
    row = (await conn.execute(stmt)).first()
    return StoredSuppression(*row) if row is not None else None


async def remove_suppression(engine: AsyncEngine, channel: str, address: str) -> StoredSuppression | None:
    """Delete the address's suppression; the row removed, or None when there was none."""
    address = spec_of(channel).suppression_address(address)
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        stored = await _get(conn, channel, address)
        if stored is not None:
            await conn.execute(
                delete(suppressions).where(suppressions.c.channel == channel, suppressions.c.address == address)
            )
    return stored


async def iter_suppressions(
    engine: AsyncEngine, channel: str | None = None, *, page: int = 5000
) -> AsyncIterator[StoredSuppression]:
    """Every suppression (of one channel), ordered by channel and address, read a page at a time."""
    after: tuple[str, str] = ("", "")
    async with engine.connect() as conn:
        while True:
            stmt = select(
                suppressions.c.channel,
                suppressions.c.address,
                suppressions.c.reason,
                suppressions.c.source,
                suppressions.c.created_at,
            )
            if channel is not None:
                stmt = stmt.where(suppressions.c.channel == channel)
            stmt = (
                stmt.where(
                    (suppressions.c.channel > after[0])
                    | ((suppressions.c.channel == after[0]) & (suppressions.c.address > after[1]))
                )
                .order_by(suppressions.c.channel, suppressions.c.address)
                .limit(page)
            )
            rows = (await conn.execute(stmt)).all()
            for row in rows:
                yield StoredSuppression(*row)
            if len(rows) < page:
                return
            after = (rows[-1].channel, rows[-1].address)


async def suppression_counts(engine: AsyncEngine) -> dict[str, int]:
    stmt = select(suppressions.c.channel, func.count()).group_by(suppressions.c.channel)
    async with engine.connect() as conn:
        return {channel: n for channel, n in await conn.execute(stmt)}
