"""Dialect-specific INSERT (for ON CONFLICT) chosen from the connection, never from strings; and
PostgreSQL's many-rows-in-one-statement form (``unnest_rows``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def upsert_insert(conn: AsyncConnection, table: Table) -> Any:
    """``insert(table)`` from the connection's dialect, with ``on_conflict_do_*`` available."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for dialect {name}")


def unnest_rows(table: Table, names: Sequence[str], *also: Any) -> Any:
    """``SELECT`` one row per array element, PostgreSQL: ``unnest`` over one array parameter per
    column ``names`` (each bound by its name, typed as an array of that column's type), then ``also``
    (further columns, e.g. one bound value shared by every row). For ``insert(...).from_select``: a
    whole batch in one statement, one round trip, one parameter per column instead of per row."""
    arrays = (
        func.unnest(*(bindparam(name, type_=postgresql.ARRAY(table.c[name].type)) for name in names))
        .table_valued(*names)
        .render_derived()
    )
    return select(*arrays.c, *also)


def column_lists(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    """The parameters of ``unnest_rows``: one list per column, in row order."""
    return {name: [row[name] for row in rows] for name in names}
