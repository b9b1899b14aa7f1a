"""Importing purchase and search events: unknown contacts are reported per row; re-importing the
same file changes nothing (purchases are unique by order_id + sku, searches by contact, term, time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.errors import Problem
from topslot.imports.batches import event_batches
from topslot.imports.events import EventRow, PurchaseRow, SearchRow
from topslot.imports.report import ImportReport, Progress
from topslot.store.contacts import contact_ids_query
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import column_lists, execute_many, rows_at_once, unnest_rows, upsert_insert
from topslot.store.prefetch import batches as _batches
from topslot.store.schema import purchases, searches

DEFAULT_BATCH_SIZE = 2000


async def import_events(
    engine: AsyncEngine,
    path: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    parallel: bool | None = None,
    encoding: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import purchases and searches; ``parallel`` and ``encoding`` as in ``import_contacts``."""
    report = ImportReport()
    writer = engine.execution_options(**IMMEDIATE)
    async for batch in _batches(event_batches, parallel, path=path, batch_size=batch_size, encoding=encoding):
        report.rejected += batch.rejected
        report.problems.extend(batch.problems)
        if batch.rows:
            await _flush(writer, batch.rows, str(path), report)
        if progress is not None:
            progress(report.rows)
    report.problems.sort()
    return report


async def _flush(engine: AsyncEngine, rows: list[EventRow], path: str, report: ImportReport) -> None:
    async with engine.begin() as conn:
        ids = await _contact_ids(conn, {r.contact for r in rows})
        known: list[EventRow] = []
        for row in rows:
            if row.contact in ids:
                known.append(row)
            else:
                report.reject(
                    [Problem(path, row.line, 1, f"contact {row.contact!r} is not known (import contacts first)")]
                )
        bought = [r for r in known if isinstance(r, PurchaseRow)]
        searched = [r for r in known if isinstance(r, SearchRow)]
        inserted = await _insert_purchases(conn, bought, ids) + await _insert_searches(conn, searched, ids)
    report.imported += inserted
    report.ignored += len(known) - inserted


async def _contact_ids(conn: AsyncConnection, external_ids: set[str]) -> dict[str, int]:
    return dict(await conn.run_sync(rows_at_once, contact_ids_query(conn.dialect.name), {"ids": sorted(external_ids)}))


async def _insert_purchases(conn: AsyncConnection, rows: list[PurchaseRow], ids: dict[str, int]) -> int:
    if not rows:
        return 0
    params = [
        {
            "contact_id": ids[r.contact],
            "order_id": r.order_id,
            "sku": r.sku,
            "category": r.category,
            "amount": r.amount,
            "currency": r.currency,
            "purchased_at": r.purchased_at,
        }
        for r in rows
    ]
    return await _inserted(conn, purchases, params, [purchases.c.order_id, purchases.c.sku])


async def _insert_searches(conn: AsyncConnection, rows: list[SearchRow], ids: dict[str, int]) -> int:
    if not rows:
        return 0
    params = [
        {
            "contact_id": ids[r.contact],
            "term": r.term,
            "term_folded": r.term.casefold(),
            "searched_at": r.searched_at,
        }
        for r in rows
    ]
    return await _inserted(conn, searches, params, [searches.c.contact_id, searches.c.term, searches.c.searched_at])


async def _inserted(
    conn: AsyncConnection, table: Table, params: list[dict[str, Any]], unique: list[Column[Any]]
) -> int:
    """INSERT ... ON CONFLICT (``unique``) DO NOTHING for many rows; how many rows were new.
    SQLite: multi-row statements (``execute_many``), whose rowcount counts exactly the inserted rows
    (cheaper than RETURNING). PostgreSQL: one statement over arrays (``unnest_rows``) returning the new
    rows' ids."""
    stmt = upsert_insert(conn, table)
    if conn.dialect.name == "sqlite":
        return await conn.run_sync(execute_many, stmt.on_conflict_do_nothing(index_elements=unique), params)
    names = list(params[0])
    stmt = stmt.from_select(names, unnest_rows(table, names)).on_conflict_do_nothing(index_elements=unique)
    return len((await conn.execute(stmt.returning(table.c.id), column_lists(params, names))).all())
