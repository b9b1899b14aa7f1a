"""Importing contacts into the store: stream the file, validate each row (pure), upsert in batches.

Each batch (contacts, then their tags and consents) is ONE transaction: a crash mid-import leaves
whole batches or nothing of a batch. Bad rows are reported and skipped; good rows are written.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Select, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.imports.batches import contact_batches
from topslot.imports.contacts import ContactRow
from topslot.imports.report import ImportReport, Progress
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import among, column_lists, execute_many, rows_at_once, unnest_rows, upsert_insert
from topslot.store.prefetch import batches as _batches
from topslot.store.schema import consents, contact_tags, contacts

DEFAULT_BATCH_SIZE = 2000


async def import_contacts(
    engine: AsyncEngine,
    path: Path,
    *,
    now: datetime,
    default_country: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    parallel: bool | None = None,
    encoding: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Upsert every good row of ``path`` by external_id; report every bad one.

    ``parallel`` parses in a worker process while batches are written (default: for files over
    ``PARALLEL_MIN_BYTES``). ``encoding``: the file's codec (default: UTF-8 or its byte-order
    mark; see ``topslot.imports.lines.resolve_encoding``)."""
    report = ImportReport()
    kwargs = {"path": path, "default_country": default_country, "now": now, "batch_size": batch_size}
    kwargs["encoding"] = encoding
    writer = engine.execution_options(**IMMEDIATE)
    async for batch in _batches(contact_batches, parallel, **kwargs):
        report.rejected += batch.rejected
        report.problems.extend(batch.problems)
        if batch.rows:
            await _flush(writer, batch.rows, now, report)
        if progress is not None:
            progress(report.rows)
    report.problems.sort()
    return report


async def _flush(engine: AsyncEngine, rows: list[ContactRow], now: datetime, report: ImportReport) -> None:
    async with engine.begin() as conn:
        existing = await _ids(conn, [r.external_id for r in rows])
        await _upsert_contacts(conn, rows, now)
        ids = existing | await _ids(conn, [r.external_id for r in rows if r.external_id not in existing])
        await _replace_tags(conn, [(ids[r.external_id], r.tags) for r in rows if r.tags is not None])
        await _upsert_consents(conn, [(ids[r.external_id], r) for r in rows if r.consents])
    new = sum(1 for r in rows if r.external_id not in existing)
    report.imported += new
    report.updated += len(rows) - new


async def _ids(conn: AsyncConnection, external_ids: list[str]) -> dict[str, int]:
    if not external_ids:
        return {}
    return dict(await conn.run_sync(rows_at_once, contact_ids_query(conn.dialect.name), {"ids": external_ids}))


@cache
def contact_ids_query(dialect: str) -> Select[Any]:
    """external_id and id of the contacts whose external id is among ``ids``: one statement per
    dialect (``among``; read in one step on SQLite by ``rows_at_once``)."""
    return select(contacts.c.external_id, contacts.c.id).where(among(dialect, contacts.c.external_id))


async def _upsert_contacts(conn: AsyncConnection, rows: list[ContactRow], now: datetime) -> None:
    """Rows are grouped by the columns they carry so that absent columns stay untouched."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        values = {"external_id": row.external_id, **row.values, "created_at": now, "updated_at": now}
        groups.setdefault(frozenset(row.values), []).append(values)
    pg = conn.dialect.name == "postgresql"
    for columns, params in groups.items():
        stmt = upsert_insert(conn, contacts)
        names = list(params[0])
        if pg:  # one statement over arrays (a batch never holds an external id twice: contact_batches)
            stmt = stmt.from_select(names, unnest_rows(contacts, names))
        update = {name: stmt.excluded[name] for name in columns} | {"updated_at": stmt.excluded.updated_at}
        upsert = stmt.on_conflict_do_update(index_elements=[contacts.c.external_id], set_=update)
        if pg:
            await conn.execute(upsert, column_lists(params, names))
        else:
            await conn.run_sync(execute_many, upsert, params)


async def _replace_tags(conn: AsyncConnection, tagged: Iterable[tuple[int, tuple[str, ...]]]) -> None:
    tagged = list(tagged)
    if not tagged:
        return
    await conn.execute(delete(contact_tags).where(contact_tags.c.contact_id.in_([cid for cid, _ in tagged])))
    pairs = [{"contact_id": cid, "tag": tag} for cid, tags in tagged for tag in tags]
    if not pairs:
        return
    if conn.dialect.name == "postgresql":  # one statement over arrays
        names = ["contact_id", "tag"]
        await conn.execute(insert(contact_tags).from_select(names, unnest_rows(contact_tags, names)),
                           column_lists(pairs, names))  # fmt: skip
    else:
        await conn.run_sync(execute_many, insert(contact_tags), pairs)


async def _upsert_consents(conn: AsyncConnection, rows: list[tuple[int, ContactRow]]) -> None:
    params = [
        {
            "contact_id": contact_id,
            "channel": c.channel,
            "granted": c.granted,
            "source": c.source,
            "recorded_at": c.recorded_at,
        }
        for contact_id, row in rows
        for c in row.consents
    ]
    if not params:
        return
    stmt = upsert_insert(conn, consents)
    names = list(params[0])
    pg = conn.dialect.name == "postgresql"
    if pg:  # one statement over arrays
        stmt = stmt.from_select(names, unnest_rows(consents, names))
    stmt = stmt.on_conflict_do_update(
        index_elements=[consents.c.contact_id, consents.c.channel],
        set_={
            "granted": stmt.excluded.granted,
            "source": stmt.excluded.source,
            "recorded_at": stmt.excluded.recorded_at,
        },
    )
    if pg:
        await conn.execute(stmt, column_lists(params, names))
    else:
        await conn.run_sync(execute_many, stmt, params)
