"""Contact import into SQLite and PostgreSQL: good rows kept, bad rows reported, batches atomic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

import topslot.store.contacts as store_contacts
from topslot.store.contacts import import_contacts
from topslot.store.schema import consents, contact_tags, contacts

NOW = datetime(2027, 5, 6, 12, tzinfo=UTC)
LATER = datetime(2027, 5, 7, 12, tzinfo=UTC)

GOOD_AND_BAD = """external_id,email,phone,gender,birth_date,country,timezone,tags,consent_email,consent_sms,loyalty
a1,ann@example.com,202 555 0101,female,1990-05-06,US,America/New_York,vip;newsletter,yes,no,5
a2,broken-email,,female,,US,,,,,
a3,cat@example.com,12,robot,,XX,Mars/Base,,maybe,,
a4,dan@example.com,+49 30 901820,male,,DE,Europe/Berlin,staff,yes,yes,gold
,eve@example.com,,,,,,,,,
"""


async def _rows(engine: AsyncEngine) -> dict[str, dict]:
    async with engine.connect() as conn:
        result = await conn.execute(select(contacts).order_by(contacts.c.external_id))
        return {r["external_id"]: dict(r) for r in result.mappings()}


async def _count(engine: AsyncEngine, table) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)))


async def test_good_rows_are_imported_and_every_bad_row_reported(engine: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(GOOD_AND_BAD, encoding="utf-8")
    report = await import_contacts(engine, path, now=NOW, default_country="US")
    assert (report.imported, report.updated, report.rejected) == (2, 0, 3)
    lines = [(p.line, p.column, p.message.split(" ")[0]) for p in report.problems]
    assert lines == [
        (3, 2, "email"),
        (4, 3, "phone"),
        (4, 4, "gender"),
        (4, 6, "country"),
        (4, 7, "timezone"),
        (4, 9, "consent_email"),
        (6, 1, "external_id"),
    ]
    assert all(str(p).startswith(f"{path}:") for p in report.problems)
    rows = await _rows(engine)
    assert set(rows) == {"a1", "a4"}
    assert rows["a1"]["phone"] == "+12025550101" and rows["a1"]["attributes"] == {"loyalty": 5}
    assert rows["a4"]["attributes"] == {"loyalty": "gold"} and rows["a1"]["created_at"] == NOW
    async with engine.connect() as conn:
        tags = (await conn.execute(select(contact_tags.c.tag).order_by(contact_tags.c.tag))).scalars().all()
        granted = (await conn.execute(select(consents.c.channel, consents.c.granted).order_by(consents.c.contact_id, consents.c.channel))).all()
    assert tags == ["newsletter", "staff", "vip"]
    assert [tuple(g) for g in granted] == [("email", True), ("sms", False), ("email", True), ("sms", True)]


async def test_reimport_updates_by_external_id_and_keeps_absent_columns(engine: AsyncEngine, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    first.write_text(GOOD_AND_BAD, encoding="utf-8")
    await import_contacts(engine, first, now=NOW, default_country="US")
    before = await _rows(engine)
    second = tmp_path / "second.jsonl"
    second.write_text(
        '{"external_id": "a1", "email": "ann.new@example.com", "tags": ["gold"], "consent_sms": "yes"}\n'
        '{"external_id": "a9", "email": "new@example.net"}\n'
        '{"external_id": "a1", "first_name": "Ann"}\n',  # same contact twice: applied in order
        encoding="utf-8",
    )
    report = await import_contacts(engine, second, now=LATER, default_country="US")
    assert (report.imported, report.updated, report.rejected) == (1, 2, 0)
    rows = await _rows(engine)
    assert rows["a1"]["id"] == before["a1"]["id"]
    assert rows["a1"]["email"] == "ann.new@example.com" and rows["a1"]["first_name"] == "Ann"
    assert rows["a1"]["phone"] == "+12025550101"  # not in the second file: untouched
    assert rows["a1"]["created_at"] == NOW and rows["a1"]["updated_at"] == LATER
    async with engine.connect() as conn:
        tags = (await conn.execute(select(contact_tags.c.tag).where(contact_tags.c.contact_id == rows["a1"]["id"]))).scalars().all()
        sms = await conn.scalar(
            select(consents.c.granted).where(consents.c.contact_id == rows["a1"]["id"], consents.c.channel == "sms")
        )
    assert tags == ["gold"] and sms is True
    assert await _count(engine, contacts) == 3


async def test_a_batch_that_fails_midway_leaves_nothing_of_that_batch(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "many.csv"
    path.write_text(
        "external_id,email,tags,consent_email\n"
        + "".join(f"x{i},p{i}@example.com,t{i},yes\n" for i in range(10)),
        encoding="utf-8",
    )
    calls = {"n": 0}
    real = store_contacts._replace_tags

    async def crash_on_second_batch(conn, tagged):  # after that batch's contacts were upserted
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        await real(conn, tagged)

    monkeypatch.setattr(store_contacts, "_replace_tags", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await import_contacts(engine, path, now=NOW, batch_size=4)
    assert sorted(await _rows(engine)) == ["x0", "x1", "x2", "x3"]  # first batch whole, second batch absent
    assert await _count(engine, contact_tags) == 4
    assert await _count(engine, consents) == 4

    monkeypatch.setattr(store_contacts, "_replace_tags", real)
    report = await import_contacts(engine, path, now=NOW, batch_size=4)  # re-run finishes the job
    assert (report.imported, report.updated) == (6, 4)
    assert await _count(engine, contact_tags) == 10


async def test_parallel_parsing_gives_the_same_result(engine: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(GOOD_AND_BAD, encoding="utf-8")
    inline = await import_contacts(engine, path, now=NOW, default_country="US", parallel=False)
    parallel = await import_contacts(engine, path, now=NOW, default_country="US", parallel=True, batch_size=1)
    assert (parallel.imported, parallel.updated, parallel.rejected) == (0, 2, 3)
    assert parallel.problems == inline.problems


async def test_a_worker_failure_is_raised(engine: AsyncEngine, tmp_path: Path) -> None:
    from topslot.store.prefetch import WorkerFailed

    path = tmp_path / "not-utf8.csv"
    path.write_bytes("external_id,城市\n1,上海\n".encode("gb18030"))  # refused as a whole: not UTF-8
    with pytest.raises(WorkerFailed, match="InvalidInput: .*the file is not UTF-8"):
        await import_contacts(engine, path, now=NOW, parallel=True)
