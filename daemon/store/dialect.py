"""Dialect-specific INSERT (for ON CONFLICT) chosen from the connection, never from strings;
PostgreSQL's many-rows-in-one-statement form (``unnest_rows``); and SQLite's, both ways: a query's rows
read in one step (``rows_at_once``), many rows written by multi-row statements (``execute_rows``,
``execute_many``).

Why SQLite needs them: the ``sqlite3`` module lets go of the interpreter lock around every step of
the engine (one per row read, one per row of an ``executemany``) and takes it back after. While another
thread runs Python (the event loop serving requests, the planner planning the next batch), each take
waits up to ``sys.getswitchinterval()`` (5 ms): a thousand rows read or written beside a busy thread
could take seconds. Packed in one step, they take one wait."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, Table, Text, TypeDecorator, any_, bindparam, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection


def upsert_insert(conn: AsyncConnection | Connection | str, table: Table) -> Any:
    """``insert(table)`` from the connection's dialect (or the dialect named), with ``on_conflict_do_*``
    available."""
    name = conn if isinstance(conn, str) else conn.dialect.name
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
    arrays = unnest_values({name: table.c[name].type for name in names})
    return select(*arrays.c, *also)


def unnest_values(columns: Mapping[str, Any]) -> Any:
    """PostgreSQL: a derived table ``unnest(:a, :b, …) AS anon(a, b, …)``, one row per array element,
    each column bound as ONE array parameter of its name, typed as an array of the type given (a
    column's type, so values convert as that column's would). For ``UPDATE … FROM``: a batch of rows,
    each with its own values, in one statement and one round trip (an ``executemany`` is a
    statement per row; an ``IN`` list a new statement for every count of rows)."""
    return (
        func.unnest(*(bindparam(name, type_=postgresql.ARRAY(type_)) for name, type_ in columns.items()))
        .table_valued(*columns)
        .render_derived()
    )


async def plan_for_values(conn: AsyncConnection) -> None:
    """PostgreSQL: the rest of this transaction plans each statement for its parameters' values
    (``SET LOCAL plan_cache_mode = force_custom_plan``); elsewhere nothing.

    asyncpg prepares every statement, and from a statement's sixth run PostgreSQL may switch to a
    generic plan, made without the values. Made while a table has no statistics yet (a campaign
    planned minutes before its slot, coupon codes inserted while the bucket sends) such a plan can be
    ruinous: a chunk's ``UPDATE … FROM unnest(…)`` joined its 1,000 rows to 1,000 by a nested loop,
    22 ms → 2.8 s a chunk (``bench/send_pipeline.py --pg``). For the dispatch's per-chunk
    transactions, not every session: custom plans slowed bulk statements by a third (planning a
    million contacts 26 → 37 s, inserting them 30 → 47 s in ``bench/plan_ledger.py``)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_CUSTOM_PLANS)


_CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")


def among(dialect: str, column: ColumnElement[Any]) -> ColumnElement[bool]:
    """``column`` is one of the parameter ``ids`` (a list), as ONE parameter whatever the count: one
    statement text, prepared and planned once (an ``IN (?, ?, …)`` list is a new statement, rendered,
    prepared and planned again, for every count of ids). PostgreSQL: ``column = ANY(:ids)``, an
    array; SQLite: ``column IN (SELECT value FROM json_each(:ids))``, the ids as one JSON text."""
    if dialect == "postgresql":
        return column == any_(bindparam("ids", type_=postgresql.ARRAY(column.type)))
    ids = func.json_each(bindparam("ids", type_=JsonList())).table_valued("value")  # SQLite (open_engine: no other)
    return column.in_(select(ids.c.value).scalar_subquery())


def json_rows(name: str, width: int) -> list[ColumnElement[Any]]:
    """SQLite: the ``width`` columns of the rows of the parameter ``name``, a list of ``width``-long
    lists bound as ONE JSON text (``json_each``), to select with other values: many rows in one
    statement text whatever their count, bound as one value (see ``among``)."""
    each = func.json_each(bindparam(name, type_=JsonList())).table_valued("value")
    return [func.json_extract(each.c.value, f"$[{i}]") for i in range(width)]


class JsonList(TypeDecorator[list[Any]]):
    """A list bound as its JSON text (SQLite's ``json_each`` reads it)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else orjson.dumps(list(value)).decode()


def column_lists(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    """The parameters of ``unnest_rows``: one list per column, in row order."""
    return {name: [row[name] for row in rows] for name in names}


def rows_at_once(conn: Connection, stmt: Select[Any], params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows of ``stmt`` (with ``params``) as tuples, each value converted by its column's type as
    ``execute`` would.

    On SQLite, read in ONE step of the engine: the rows come back packed in a single JSON value
    (``json_group_array`` of ``json_array``). Integers and texts (SQLite's datetimes and JSON columns
    are texts) travel unchanged through JSON; not for blobs or reals (JSON writes a real with 15
    significant digits). Elsewhere, an ordinary execute.

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


SQLITE_ROWS_PER_STATEMENT = 500  # rows of one multi-row statement (fewer if the variable limit says so)
_ONE_ROW = re.compile(r"^(?P<head>.*? VALUES )(?P<row>\(\?(?:, \?)*\))(?P<tail>.*)$", re.DOTALL)


def execute_many(conn: Connection, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> int:
    """``conn.execute(stmt, rows)``, an ``executemany`` of the INSERT ``stmt`` (``ON CONFLICT`` clauses
    allowed) over ``rows``, dicts with the same keys; returns the rowcount (rows inserted or updated; -1
    where the driver counts nothing, as asyncpg's ``executemany``).

    On SQLite, by ``execute_rows`` (multi-row statements), each value through its column type's bind
    processor as ``execute`` would, without SQLAlchemy's per-row parameter processing. Elsewhere, or
    when the statement is not of that shape (a Python-side default to compute per row, a bound value
    amid the row's), the ``executemany``."""
    if conn.dialect.name != "sqlite" or len(rows) < 2:
        return int(conn.execute(stmt, list(rows)).rowcount)
    dialect = conn.dialect
    keys = list(rows[0])
    compiled = stmt.compile(dialect=dialect, column_keys=keys)
    names = compiled.positiontup
    if names is None or compiled.insert_prefetch:
        return int(conn.execute(stmt, list(rows)).rowcount)
    per_row: list[tuple[str, Any]] = []
    shared: list[Any] = []  # the statement's own bound values, after the rows' (see execute_rows)
    for name in names:
        bind = compiled.binds[name]
        process = bind.type._cached_bind_processor(dialect)
        if name in keys and not shared:
            per_row.append((name, process))
        elif name in keys:  # a bound value amid the row's
            return int(conn.execute(stmt, list(rows)).rowcount)
        else:
            value = bind.effective_value
            shared.append(value if process is None or value is None else process(value))
    values = [
        (*(row[k] if process is None or row[k] is None else process(row[k]) for k, process in per_row), *shared)
        for row in rows
    ]
    return execute_rows(conn, compiled.string, values)


def execute_rows(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    """``conn.exec_driver_sql(sql, rows)``: an ``executemany`` of ``sql``, an ``INSERT … VALUES (?, …, ?)``
    for one row in the driver's paramstyle, possibly followed by a tail (``ON CONFLICT … DO UPDATE …``)
    with parameters of its own, which must then be the same in every row (they are bound once).

    On SQLite: multi-row statements (``VALUES (…), (…), …``) of up to ``SQLITE_ROWS_PER_STATEMENT``
    rows, one step of the engine each, where an ``executemany`` takes one per row (see above). Rows
    are inserted in order, as by the ``executemany``. Elsewhere, the ``executemany``. Returns the
    rowcount (rows inserted or updated)."""
    match = _ONE_ROW.match(sql) if conn.dialect.name == "sqlite" and len(rows) > 1 else None
    if match is None:
        return int(conn.exec_driver_sql(sql, list(rows)).rowcount)
    head, row, tail = match.group("head", "row", "tail")
    width = row.count("?")
    shared = tuple(rows[0][width:])  # the tail's parameters
    per = max(1, min(SQLITE_ROWS_PER_STATEMENT, (_sqlite_variables(conn) - len(shared)) // width))
    start = count = 0
    for size in _statement_sizes(len(rows), per):
        values = [v for r in rows[start : start + size] for v in r[:width]]
        values.extend(shared)
        count += conn.exec_driver_sql(f"{head}{', '.join([row] * size)}{tail}", tuple(values)).rowcount
        start += size
    return count


def _statement_sizes(n: int, per: int) -> list[int]:
    """``n`` rows cut into statements of ``per`` rows, the rest into powers of two (337 → 256, 64, 16,
    1): a handful of statement texts whatever the batch sizes, so ``sqlite3``'s cache of prepared
    statements (128 per connection, each of a multi-row statement holding every parameter) keeps
    reusing them instead of filling up with one text per remainder."""
    sizes = [per] * (n // per)
    rest = n % per
    bit = 1 << rest.bit_length()
    while rest:
        bit >>= 1
        if rest & bit:
            sizes.append(bit)
            rest -= bit
    return sizes


def _sqlite_variables(conn: Connection) -> int:
    """How many ``?`` one SQLite statement may hold (its ``SQLITE_LIMIT_VARIABLE_NUMBER``)."""
    getlimit = getattr(conn.connection.driver_connection, "getlimit", None)  # sqlite3's; aiosqlite has none
    if getlimit is not None:
        return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999  # SQLite's default limits
