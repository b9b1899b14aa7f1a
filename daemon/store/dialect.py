"""Dialect-specific INSERT (for ON CONFLICT) chosen from the connection, never from strings;
PostgreSQL's many-rows-in-one-statement form (``unnest_rows``); and a query's rows read in one step of
SQLite (``rows_at_once``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Select, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
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


def rows_at_once(conn: Connection, stmt: Select[Any], params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows of ``stmt`` (with ``params``) as tuples, each value converted by its column's type as
    ``execute`` would.

    On SQLite, read in ONE step of the engine: the rows come back packed in a single JSON value
    (``json_group_array`` of ``json_array``). The ``sqlite3`` module lets go of the interpreter lock
    around every step, one step per row, and takes it back after: while another thread runs Python,
    each of those takes waits up to ``sys.getswitchinterval()`` (5 ms), so a thousand rows read beside
    a busy event loop could take seconds; packed, they take one wait. Integers and texts (SQLite's
    datetimes are texts) travel unchanged through JSON; not for blobs or reals (JSON writes a real
    with 15 significant digits). Elsewhere, an ordinary execute.

    A statement built once and passed again (its variable parts as ``params``) is packed once."""
    if conn.dialect.name != "sqlite":
        return [tuple(row) for row in conn.execute(stmt, params)]
    packed, steps = _packed(stmt, conn.dialect)
    rows = orjson.loads(conn.execute(packed, params).scalar_one())
    if steps:
        for row in rows:
            for i, processor in steps:
                if row[i] is not None:
                    row[i] = processor(row[i])
    return [tuple(row) for row in rows]


_PACKED: dict[tuple[int, str], tuple[Select[Any], Select[Any], list[tuple[int, Any]]]] = {}
_PACKED_MAX = 256


def _packed(stmt: Select[Any], dialect: Any) -> tuple[Select[Any], list[tuple[int, Any]]]:
    """``stmt`` wrapped for ``rows_at_once``, and (position, result processor) of the columns that have
    one; remembered by the statement's identity (the statement is kept, so the identity stays its own)."""
    key = (id(stmt), dialect.driver)
    known = _PACKED.get(key)
    if known is not None and known[0] is stmt:
        return known[1], known[2]
    inner = stmt.subquery()
    packed = select(func.json_group_array(func.json_array(*inner.c)))
    steps = [
        (i, processor)
        for i, column in enumerate(stmt.selected_columns)
        if (processor := column.type._cached_result_processor(dialect, None)) is not None
    ]
    if len(_PACKED) >= _PACKED_MAX:  # statements built per call are not worth keeping
        _PACKED.clear()
    _PACKED[key] = (stmt, packed, steps)
    return packed, steps
