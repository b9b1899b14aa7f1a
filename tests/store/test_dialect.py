"""``rows_at_once`` reads what ``execute`` reads (SQLite: packed in one JSON value), on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store import dialect
from topslot.store.dialect import rows_at_once, upsert_insert
from topslot.store.schema import campaigns, contacts, events

BASE = datetime(2026, 12, 4, 5, 30, tzinfo=UTC)
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)


async def _stored(engine: AsyncEngine, rows: list[dict[str, object]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(events.delete())
        if rows:
            await conn.execute(insert(events), rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**6),  # microseconds after BASE
            st.none() | TEXT,  # user agent: any text, quotes, backslashes, emoji, control characters
        ),
        max_size=8,
    )
)
async def test_rows_at_once_reads_what_execute_reads(engine: AsyncEngine, values: list[tuple[int, str | None]]) -> None:
    rows = [
        {"kind": "click", "occurred_at": BASE + timedelta(microseconds=us), "user_agent": ua, "method": "GET"}
        for us, ua in values
    ]
    await _stored(engine, rows)
    stmt = select(events.c.id, events.c.occurred_at, events.c.user_agent, events.c.link_id, events.c.kind).order_by(
        events.c.id
    )
    async with engine.connect() as conn:
        expected = [tuple(r) for r in await conn.execute(stmt)]
        got = await conn.run_sync(rows_at_once, stmt)
    assert got == expected
    assert all(isinstance(r[1], datetime) and r[1].tzinfo is not None for r in got)


async def test_rows_at_once_of_no_rows(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(rows_at_once, select(campaigns.c.id)) == []
        assert await conn.run_sync(rows_at_once, select(events.c.id).where(events.c.id < 0)) == []


async def test_execute_rows_writes_every_row_in_order_with_a_shared_tail(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upsert of 7 rows, 3 per SQLite statement: every row in, in order; the tail's parameter
    (ON CONFLICT … SET label = ?) bound once per statement; a conflicting row updates, as in an
    executemany. PostgreSQL: the executemany itself."""
    monkeypatch.setattr(dialect, "SQLITE_ROWS_PER_STATEMENT", 3)
    await _stored(engine, [])
    columns = "INSERT INTO events (id, kind, method, occurred_at)"
    if engine.dialect.name == "postgresql":  # asyncpg's numbered parameters
        sql = f"{columns} VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET label = $5"
        at: object = BASE
    else:  # the driver's value: UTCDateTime's text
        sql = f"{columns} VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET label = ?"
        at = "2026-12-04 05:30:00.000000"
    rows = [(i, "click", f"M{i}", at, "again") for i in (1, 2, 3, 4, 5, 6, 7)] + [(3, "click", "M3", at, "again")]
    async with engine.begin() as conn:
        await conn.run_sync(dialect.execute_rows, sql, rows)
    async with engine.connect() as conn:
        stored = [
            tuple(r)
            for r in await conn.execute(select(events.c.id, events.c.method, events.c.label).order_by(events.c.id))
        ]
    assert stored == [(i, f"M{i}", "again" if i == 3 else None) for i in range(1, 8)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),  # external id: repeats conflict, the later row updates the earlier
            st.none() | TEXT,
            st.none() | st.dates(),
            st.none() | st.dictionaries(TEXT, st.none() | st.integers() | TEXT, max_size=3),
            st.integers(0, 10**9),  # microseconds after BASE
        ),
        min_size=2,
        max_size=9,
    )
)
async def test_execute_many_writes_what_an_executemany_writes(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, values: list[tuple[int, str | None, object, object, int]]
) -> None:
    """An upsert (dates, JSON, instants through their columns' types; a bound value of the statement's
    own in ON CONFLICT … SET) of rows with repeated keys, 2 rows per SQLite statement: the same rows
    and the same rowcount as ``conn.execute(stmt, rows)``; ON CONFLICT DO NOTHING counts the new rows."""
    monkeypatch.setattr(dialect, "SQLITE_ROWS_PER_STATEMENT", 2)
    packed: list[int] = []  # rows handed to multi-row statements
    execute_rows = dialect.execute_rows
    monkeypatch.setattr(dialect, "execute_rows", lambda conn, sql, r: packed.append(len(r)) or execute_rows(conn, sql, r))
    rows = [
        {"external_id": f"c{key}", "first_name": name, "birth_date": born, "attributes": attrs,
         "created_at": BASE + timedelta(microseconds=us), "updated_at": BASE}
        for key, name, born, attrs, us in values
    ]  # fmt: skip
    stored = select(
        contacts.c.external_id, contacts.c.first_name, contacts.c.birth_date, contacts.c.attributes,
        contacts.c.created_at, contacts.c.updated_at, contacts.c.locale,
    ).order_by(contacts.c.external_id)  # fmt: skip
    results = []
    for write in (dialect.execute_many, lambda conn, stmt, rows: conn.execute(stmt, rows).rowcount):
        async with engine.begin() as conn:
            await conn.execute(contacts.delete())
            stmt = upsert_insert(conn, contacts)
            stmt = stmt.on_conflict_do_update(
                index_elements=[contacts.c.external_id],
                set_={"first_name": stmt.excluded.first_name, "locale": literal("fr-FR")},
            )
            count = await conn.run_sync(write, stmt, rows)
            again = await conn.run_sync(write, upsert_insert(conn, contacts).on_conflict_do_nothing(), rows)
            results.append((count, again, [tuple(r) for r in await conn.execute(stored)]))
    assert results[0] == results[1]
    assert results[0][1] == (0 if engine.dialect.name == "sqlite" else -1)  # asyncpg's executemany counts nothing
    assert packed == ([len(rows), len(rows)] if engine.dialect.name == "sqlite" else [])  # not the fallback


async def test_execute_many_counts_the_rows_a_do_nothing_insert_adds(engine: AsyncEngine) -> None:
    rows = [{"external_id": f"x{i % 3}", "created_at": BASE, "updated_at": BASE} for i in range(7)]
    async with engine.begin() as conn:
        await conn.execute(contacts.delete())
        added = await conn.run_sync(dialect.execute_many, upsert_insert(conn, contacts).on_conflict_do_nothing(), rows)
        assert added == (3 if engine.dialect.name == "sqlite" else -1)  # asyncpg's executemany counts nothing
        assert await conn.scalar(select(func.count()).select_from(contacts)) == 3


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12), max_size=6),
    st.lists(st.integers(-5, 20), max_size=30),
)
async def test_among_finds_exactly_the_listed_values_as_one_parameter(
    engine: AsyncEngine, names: list[str], wanted: list[int]
) -> None:
    """``among``: integer and text ids, repeats, none at all; one statement text whatever the count."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(contacts.delete())
        people = [{"external_id": f"x{i}{n}", "created_at": now, "updated_at": now} for i, n in enumerate(names)]
        if people:
            await conn.execute(insert(contacts), people)
        rows = (await conn.execute(select(contacts.c.id, contacts.c.external_id))).all()
    name = conn.dialect.name
    by_id = select(contacts.c.id).where(dialect.among(name, contacts.c.id))
    by_ref = select(contacts.c.id).where(dialect.among(name, contacts.c.external_id))
    ids = [r.id for r in rows]
    asked = [ids[w] for w in wanted if 0 <= w < len(ids)] + [w for w in wanted if w < 0]  # some that exist
    refs = [r.external_id for r in rows][: len(wanted)] + ["nobody", "x'); DROP TABLE contacts; --"]
    async with engine.connect() as conn:
        assert sorted(await conn.scalars(by_id, {"ids": asked})) == sorted(set(i for i in asked if i in ids))
        assert sorted(await conn.scalars(by_ref, {"ids": refs})) == sorted(r.id for r in rows if r.external_id in refs)
        assert list(await conn.scalars(by_id, {"ids": []})) == []
    texts = {str(by_id.compile(dialect=conn.dialect)), str(by_id.compile(dialect=conn.dialect))}
    assert len(texts) == 1 and "POSTCOMPILE" not in texts.pop()  # nothing rendered per count


async def test_plan_for_values_holds_for_its_transaction_only(engine: AsyncEngine) -> None:
    """PostgreSQL: custom plans (each statement planned for its values) inside the transaction that
    asked, the server's default after it; SQLite: nothing to do, nothing fails."""
    postgres = engine.dialect.name == "postgresql"
    mode = "SHOW plan_cache_mode"
    async with engine.begin() as conn:
        await dialect.plan_for_values(conn)
        if postgres:
            assert (await conn.exec_driver_sql(mode)).scalar_one() == "force_custom_plan"
        assert (await conn.execute(select(literal(1)))).scalar_one() == 1
    if postgres:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql(mode)).scalar_one() == "auto"
