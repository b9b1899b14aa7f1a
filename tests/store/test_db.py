"""Engine options and migrations on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import column, insert, select, table, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store import db
from topslot.store.db import (
    IMMEDIATE,
    DatabaseUnavailable,
    current_revision,
    database_problem,
    display_url,
    json_value,
    normalise_url,
    open_engine,
    prepare_database,
    upgrade,
)
from topslot.store.schema import UTCDateTime, campaigns, contacts, deliveries, dispatch_starts, metadata

HEAD = db.head_revision()  # the newest migration
# ``deliveries`` as it was before 0012: each row carried its bucket's dispatch start.
DELIVERIES_BEFORE_0012 = table(
    "deliveries", *(column(c.name, c.type) for c in deliveries.c), column("dispatch_start_utc", UTCDateTime())
)


async def _schema_diff(engine: AsyncEngine) -> list:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True, "compare_server_default": True}),
                metadata,
            )
        )


async def _check_fresh_upgrade(engine: AsyncEngine) -> None:
    assert await current_revision(engine) is None
    await upgrade(engine)
    assert await current_revision(engine) == HEAD
    assert await _schema_diff(engine) == []
    await upgrade(engine)  # second time: a no-op
    assert await current_revision(engine) == HEAD
    assert await _schema_diff(engine) == []


async def test_migrations_match_schema_on_sqlite(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'topslot.db'}")
    try:
        await _check_fresh_upgrade(engine)
    finally:
        await engine.dispose()
    assert (tmp_path / "nested" / "dir" / "topslot.db").exists()


@pytest.mark.postgres
async def test_migrations_match_schema_on_postgresql(pg_test_url: str, make_pg_schema) -> None:
    url = pg_test_url
    async with make_pg_schema(url) as schema:
        engine = open_engine(url, schema=schema)
        try:
            await _check_fresh_upgrade(engine)
            async with engine.connect() as conn:
                tables = await conn.scalar(
                    text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
                )
            assert tables == len(metadata.tables) + 1  # + alembic_version
        finally:
            await engine.dispose()


async def test_upgrade_accepts_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'by-url.db'}"
    await upgrade(url)
    engine = open_engine(url)
    try:
        assert await current_revision(engine) == HEAD
    finally:
        await engine.dispose()


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL: commits survive power loss
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10_000
    finally:
        await engine.dispose()


async def test_the_batch_writers_blocking_engine_reads_through_a_map_and_journals_in_memory(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    blocking = db.sync_sqlite_engine(engine)
    try:
        with blocking.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == 1 << 30
            assert conn.exec_driver_sql("PRAGMA temp_store").scalar() == 2  # MEMORY
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # the rest as every connection
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        async with engine.connect() as conn:  # the daemon's own connections keep SQLite's defaults
            assert (await conn.exec_driver_sql("PRAGMA mmap_size")).scalar() == 0
            assert (await conn.exec_driver_sql("PRAGMA temp_store")).scalar() == 0
    finally:
        blocking.dispose()
        await engine.dispose()


async def test_sqlite_rolls_back_and_begins_immediate(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}")
    await upgrade(engine)
    now = datetime(2027, 5, 6, tzinfo=UTC)
    try:
        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                await conn.execute(insert(campaigns), {"id": "a", "name": "A", "config_hash": "x", "loaded_at": now})
                raise RuntimeError("boom")
        async with engine.execution_options(**IMMEDIATE).begin() as conn:
            assert (await conn.scalar(select(campaigns.c.id))) is None
            await conn.execute(insert(campaigns), {"id": "b", "name": "B", "config_hash": "x", "loaded_at": now})
        async with engine.connect() as conn:
            assert (await conn.execute(select(campaigns.c.id))).scalars().all() == ["b"]
    finally:
        await engine.dispose()


async def test_timestamps_come_back_aware_utc(engine: AsyncEngine) -> None:
    local = datetime(2027, 5, 6, 7, 30, tzinfo=timezone(timedelta(hours=8)))
    async with engine.begin() as conn:
        await conn.execute(insert(campaigns), {"id": "c", "name": "C", "config_hash": "x", "loaded_at": local})
    async with engine.connect() as conn:
        loaded = await conn.scalar(select(campaigns.c.loaded_at))
    assert loaded == local and loaded.tzinfo == UTC and loaded.hour == 23


async def test_naive_timestamps_are_refused(engine: AsyncEngine) -> None:
    from sqlalchemy.exc import StatementError

    with pytest.raises(StatementError, match="naive datetime"):
        async with engine.begin() as conn:
            await conn.execute(
                insert(campaigns), {"id": "d", "name": "D", "config_hash": "x", "loaded_at": datetime(2027, 1, 1)}
            )


def test_normalise_url_picks_async_drivers() -> None:
    assert normalise_url("sqlite:///var/x.db").drivername == "sqlite+aiosqlite"
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert normalise_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        open_engine("mysql+aiomysql://u@h/db")


# ---------------------------------------------------------------- prepare_database and one-line problems

SETTING = "(setting database_url / TOPSLOT_DATABASE_URL)"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://ops:pw-1234@db.example:5433/topslot",
            "postgresql+asyncpg://ops:***@db.example:5433/topslot",
        ),
        ("postgresql://ops@db/topslot?password=pw-1234", "postgresql://ops@db/topslot?password=***"),
        ("sqlite+aiosqlite:////var/lib/topslot.db", "sqlite+aiosqlite:////var/lib/topslot.db"),
        ("::not a url pw-1234", "(a database URL that cannot be parsed)"),
    ],
)
def test_display_url_never_shows_a_password(url: str, shown: str) -> None:
    assert display_url(url) == shown


async def test_a_raw_failure_from_upgrade_becomes_one_line(tmp_path: Path) -> None:
    """What the daemon's start-up does: ``upgrade`` fails, ``database_problem`` explains it."""
    url = f"postgresql+asyncpg://ops:pw-1234@127.0.0.1:{_closed_port()}/topslot"
    with pytest.raises(OSError) as caught:
        await upgrade(url)
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert database_problem(caught.value, url) == (
        f"database postgresql+asyncpg://ops:***@127.0.0.1:{port}/topslot is unreachable: connection refused {SETTING}"
    )


def test_an_os_error_not_raised_by_database_code_is_not_a_database_problem() -> None:
    """A tracking port in use must not be reported as the database (the daemon asks about both)."""
    with socket.socket() as taken, socket.socket() as second:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError) as caught:
            second.bind(taken.getsockname())
    assert database_problem(caught.value, "postgresql+asyncpg://u@127.0.0.1/x") is None
    assert database_problem(ValueError("a bug"), "postgresql+asyncpg://u@127.0.0.1/x") is None


async def test_prepare_database_read_only_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'topslot.db'}"
    with pytest.raises(DatabaseUnavailable, match="does not exist .nor does its directory"):
        await prepare_database(url, read_only=True)
    assert list(tmp_path.iterdir()) == []

    engine = await prepare_database(url)  # a writer creates and migrates it
    await engine.dispose()
    engine = await prepare_database(url, read_only=True)  # then a reader may open it
    try:
        assert await current_revision(engine) == HEAD
    finally:
        await engine.dispose()


async def test_an_older_schema_asks_for_db_upgrade_and_is_not_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'topslot.db'}"
    await upgrade(url)
    monkeypatch.setattr(db, "head_revision", lambda: "9999")  # as if this topslot had more migrations

    with pytest.raises(DatabaseUnavailable) as caught:
        await prepare_database(url, read_only=True)

    assert str(caught.value) == (
        f"database file {tmp_path / 'topslot.db'} has schema revision {HEAD}, older than this topslot's 9999: "
        "run topslot db upgrade"
    )


@pytest.mark.postgres
async def test_prepare_database_on_a_database_the_server_does_not_have(pg_test_url: str) -> None:
    url = make_url(pg_test_url).set(database="topslot_no_such_database").render_as_string(hide_password=False)
    with pytest.raises(DatabaseUnavailable) as caught:
        await prepare_database(url, read_only=True)
    assert 'cannot be used: database "topslot_no_such_database" does not exist' in str(caught.value)
    assert str(caught.value).endswith(SETTING) and "\n" not in str(caught.value)


def test_what_is_worth_trying_again_and_what_is_a_bug() -> None:
    import sqlite3

    from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

    from topslot.store.db import is_transient

    class AdminShutdown(Exception):  # as SQLAlchemy's asyncpg adapter hands a server's error on
        sqlstate = "57P01"

    class UniqueViolation(Exception):
        sqlstate = "23505"

    assert is_transient(OperationalError("x", {}, sqlite3.OperationalError("database or disk is full")))
    assert is_transient(DBAPIError("x", {}, AdminShutdown()))  # terminating connection (a restart)
    assert is_transient(DBAPIError("x", {}, Exception(), connection_invalidated=True))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(IntegrityError("x", {}, UniqueViolation()))
    assert not is_transient(ProgrammingError("x", {}, Exception()))
    assert not is_transient(DBAPIError("x", {}, UniqueViolation()))
    assert not is_transient(ValueError("a bug"))


async def _upgrade_0004_in_place(engine: AsyncEngine) -> None:
    """A ledger written before quiet hours and slot choice upgrades in place: rows kept, new columns
    empty, ``country_center`` and a slot basis accepted, an unknown basis refused."""
    await upgrade(engine, "0003")
    now = datetime(2027, 5, 5, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(insert(campaigns).values(id="old", name="Old", config_hash="h", loaded_at=now))
        await conn.execute(insert(contacts).values(external_id="c1", created_at=now, updated_at=now))
        old = {  # the columns 0003 had
            "campaign_id": "old", "contact_id": 1, "channel": "email", "slot_date": date(2027, 5, 6), "slot": "07:30",
            "due_utc": now, "dispatch_start_utc": now, "timezone": "UTC", "tz_source": "fallback", "state": "planned",
            "created_at": now, "updated_at": now,
        }  # fmt: skip
        await conn.execute(insert(DELIVERIES_BEFORE_0012).values(**old))
    await upgrade(engine)
    async with engine.begin() as conn:
        row = (await conn.execute(select(deliveries))).mappings().one()
        assert (row["tz_source"], row["slot_basis"], row["fallback_of"], row["country"]) == (
            "fallback",
            None,
            None,
            None,
        )
        await conn.execute(update(deliveries).values(tz_source="country_center", slot_basis="split", country="US"))
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(update(deliveries).values(slot_basis="whim"))


async def test_0004_upgrades_a_ledger_in_place_on_sqlite(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'topslot.db'}")
    try:
        await _upgrade_0004_in_place(engine)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_0004_upgrades_a_ledger_in_place_on_postgresql(pg_test_url: str, make_pg_schema) -> None:
    async with make_pg_schema(pg_test_url) as schema:
        engine = open_engine(pg_test_url, schema=schema)
        try:
            await _upgrade_0004_in_place(engine)
        finally:
            await engine.dispose()


async def _round_trip_0005(engine: AsyncEngine) -> None:
    """0005 down and up again: the campaign controls, heartbeats and bucket results come and go; a
    campaign's row (and its pause) survives the way up."""
    from alembic import command

    def downgrade(sync, revision: str) -> None:  # noqa: ANN001
        command.downgrade(db.alembic_config(sync), revision)

    await upgrade(engine)
    now = datetime(2027, 5, 5, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(insert(campaigns).values(id="c", name="C", config_hash="h", loaded_at=now, paused=True))
    async with engine.begin() as conn:
        await conn.run_sync(downgrade, "0004")
    assert await current_revision(engine) == "0004"
    await upgrade(engine)
    assert await current_revision(engine) == HEAD and await _schema_diff(engine) == []
    async with engine.connect() as conn:
        row = (await conn.execute(select(campaigns.c.paused, campaigns.c.cancelled_at))).one()
    assert (row.paused, row.cancelled_at) == (True, None)


async def test_0005_round_trip_on_sqlite(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'topslot.db'}")
    try:
        await _round_trip_0005(engine)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_0005_round_trip_on_postgresql(pg_test_url: str, make_pg_schema) -> None:
    async with make_pg_schema(pg_test_url) as schema:
        engine = open_engine(pg_test_url, schema=schema)
        try:
            await _round_trip_0005(engine)
        finally:
            await engine.dispose()


async def _round_trip_0012(engine: AsyncEngine) -> None:
    """0012 up: each bucket keeps the earliest dispatch start its rows had, in ``dispatch_starts``;
    down: every row gets its bucket's start back."""
    from alembic import command

    def downgrade(sync, revision: str) -> None:  # noqa: ANN001
        command.downgrade(db.alembic_config(sync), revision)

    await upgrade(engine, "0011")
    now = datetime(2027, 5, 5, 22, tzinfo=UTC)
    later = now + timedelta(hours=1)
    rows = [  # (contact, due, start): two rows of the bucket due now disagree about its start
        (1, now, now - timedelta(minutes=4)), (2, now, now - timedelta(minutes=10)), (3, later, later - timedelta(minutes=1)),
    ]  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(campaigns).values(id="c", name="C", config_hash="h", loaded_at=now))
        for contact, due, start in rows:
            await conn.execute(insert(contacts).values(id=contact, external_id=f"c{contact}", created_at=now, updated_at=now))
            await conn.execute(
                insert(DELIVERIES_BEFORE_0012).values(
                    campaign_id="c", contact_id=contact, channel="email", slot_date=due.date(), slot="07:30",
                    due_utc=due, dispatch_start_utc=start, timezone="UTC", tz_source="fallback", state="planned",
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
    await upgrade(engine)
    assert await _schema_diff(engine) == []
    async with engine.connect() as conn:
        starts = {(r.channel, r.due_utc): r.start_utc for r in await conn.execute(select(dispatch_starts))}
    assert starts == {("email", now): now - timedelta(minutes=10), ("email", later): later - timedelta(minutes=1)}
    async with engine.begin() as conn:
        await conn.run_sync(downgrade, "0011")
    async with engine.connect() as conn:
        query = select(DELIVERIES_BEFORE_0012.c.contact_id, DELIVERIES_BEFORE_0012.c.dispatch_start_utc)
        back = dict((await conn.execute(query.order_by("contact_id"))).all())
    assert back == {1: now - timedelta(minutes=10), 2: now - timedelta(minutes=10), 3: later - timedelta(minutes=1)}
    await upgrade(engine)
    assert await current_revision(engine) == HEAD and await _schema_diff(engine) == []


async def test_0012_round_trip_on_sqlite(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'topslot.db'}")
    try:
        await _round_trip_0012(engine)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_0012_round_trip_on_postgresql(pg_test_url: str, make_pg_schema) -> None:
    async with make_pg_schema(pg_test_url) as schema:
        engine = open_engine(pg_test_url, schema=schema)
        try:
            await _round_trip_0012(engine)
        finally:
            await engine.dispose()


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES, st.booleans())
def test_json_columns_read_back_exactly_what_json_loads_reads(value: object, ascii_only: bool) -> None:
    """``json_value`` (orjson, the fast path) reads back what ``json.dumps`` wrote exactly as
    ``json.loads`` does: huge integers stay integers, NaN and infinities come back."""
    written = json.dumps(value, ensure_ascii=ascii_only)
    got, expected = json_value(written), json.loads(written)
    assert json.dumps(got) == json.dumps(expected) and type(got) is type(expected)


def test_json_columns_read_back_huge_integers_as_integers() -> None:
    for text_ in ("123456789012345678901234567890", '{"id": -9223372036854775809}', "[18446744073709551616]"):
        assert json_value(text_) == json.loads(text_)
    assert json.dumps(json_value('{"card": 1234567890123456789}')) == '{"card": 1234567890123456789}'
