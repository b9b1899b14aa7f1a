"""Coupon storage on SQLite and PostgreSQL: pool imports, reserve / commit / release, stock,
low-stock warnings, and concurrent reservers that never hand out one code twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from topslot.campaign import Campaign
from topslot.coupons.codes import coupon_key, generate
from topslot.store import coupons as store
from topslot.store.db import IMMEDIATE
from topslot.store.schema import campaigns, contacts, coupon_codes, coupon_pools, deliveries

NOW = datetime(2027, 5, 6, 7, 0, tzinfo=UTC)
KEY = coupon_key(b"test-signing-key-0123456789")


def make_campaign(cid: str = "spring", **coupon: Any) -> Campaign:
    return Campaign.model_validate(
        {
            "id": cid,
            "name": cid,
            "channels": ["email", "sms"],
            "audience": {"all": [{"attribute": "gender", "equals": "female"}]},
            "schedule": {"start": date(2027, 5, 6), "end": date(2027, 5, 7), "slots": ["07:30"]},
            "landing_page": {"url": "https://shop.example.com/"},
            "content": {
                "email": {"from": "Shop <news@shop.example.com>", "subject": "Hi", "html": "x.html.j2"},
                "sms": {"body": "x.txt.j2"},
            },
            "coupon": coupon or {"pool": "spring"},
        }
    )


async def add_contacts(engine: AsyncEngine, n: int, start: int = 1) -> list[int]:
    rows = [{"id": i, "external_id": f"c{i}", "created_at": NOW, "updated_at": NOW} for i in range(start, start + n)]
    async with engine.begin() as conn:
        await conn.execute(insert(contacts), rows)
    return [r["id"] for r in rows]


async def add_campaign(engine: AsyncEngine, cid: str = "spring") -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(campaigns).values(id=cid, name=cid, config_hash="h", loaded_at=NOW))


async def add_delivery(engine: AsyncEngine, cid: str, contact: int, channel: str, state: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(deliveries).values(
                campaign_id=cid,
                contact_id=contact,
                channel=channel,
                slot_date=date(2027, 5, 6),
                slot="07:30",
                due_utc=NOW,
                timezone="UTC",
                tz_source="contact",
                state=state,
                created_at=NOW,
                updated_at=NOW,
            )
        )


def pool_file(tmp_path: Path, codes: list[str], name: str = "pool.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(codes) + "\n", encoding="utf-8")
    return path


async def import_codes(engine: AsyncEngine, tmp_path: Path, n: int, pool: str = "spring", prefix: str = "SP") -> None:
    report = await store.import_pool(
        engine, pool, pool_file(tmp_path, [f"{prefix}{i:06d}" for i in range(n)], f"{pool}.txt"), now=NOW
    )
    assert report.imported == n


async def reserve(engine: AsyncEngine, campaign: Campaign, ids: list[int], **kw: Any) -> store.Reservation:
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        return await store.reserve(conn, campaign, ids, NOW, **kw)


async def counters(engine: AsyncEngine, pool: str) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(coupon_pools.c.total, coupon_pools.c.available).where(coupon_pools.c.name == pool)
            )
        ).one()
    return row.total, row.available


# ---------------------------------------------------------------- import


async def test_import_counts_repeats_bad_codes_and_is_idempotent(engine: AsyncEngine, tmp_path: Path) -> None:
    path = pool_file(tmp_path, ["AAA001", "AAA002", "bad code", "AAA001", "AAA003", "AAA002", "AAA001"])
    report = await store.import_pool(engine, "spring", path, now=NOW, batch_size=2)
    assert (report.imported, report.ignored, report.rejected) == (3, 0, 4)
    assert [str(p) for p in report.problems] == [
        f"{path}:3:1: code 'bad code' has ' ': use letters A-Z, digits, '-' and '_' (starting with a letter or digit)",
        f"{path}:4:1: code 'AAA001' repeats line 1",
        f"{path}:6:1: code 'AAA002' repeats line 2",
        f"{path}:7:1: code 'AAA001' repeats line 1",
    ]
    again = await store.import_pool(engine, "spring", path, now=NOW)
    assert (again.imported, again.ignored) == (0, 3)
    more = await store.import_pool(engine, "spring", pool_file(tmp_path, ["AAA003", "AAA004"], "more.txt"), now=NOW)
    assert (more.imported, more.ignored, more.rejected) == (1, 1, 0)
    assert await counters(engine, "spring") == (4, 4)
    stock = await store.pool_stock(engine, "spring")
    assert (stock.available, stock.reserved, stock.assigned, stock.total) == (4, 0, 0, 4)


async def test_a_code_of_another_pool_is_refused(engine: AsyncEngine, tmp_path: Path) -> None:
    await store.import_pool(engine, "spring", pool_file(tmp_path, ["SHARED1", "OWN1"]), now=NOW)
    report = await store.import_pool(engine, "autumn", pool_file(tmp_path, ["SHARED1", "OWN2"], "b.txt"), now=NOW)
    assert (report.imported, report.rejected) == (1, 1)
    assert "already in pool spring" in report.problems[0].message and report.problems[0].line == 1


async def test_import_streams_a_large_file_in_batches(engine: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("id,code\n")
        for i in range(20_000):
            f.write(f"{i},BIG{i:07d}\n")
    report = await store.import_pool(engine, "big", path, now=NOW, batch_size=1000)
    assert (report.imported, report.rejected) == (20_000, 0)
    assert await counters(engine, "big") == (20_000, 20_000)


# ---------------------------------------------------------------- reserve / commit / release


async def test_pool_codes_one_per_contact_reused_across_channels(engine: AsyncEngine, tmp_path: Path) -> None:
    ids = await add_contacts(engine, 5)
    await import_codes(engine, tmp_path, 10)
    c = make_campaign()
    email = await reserve(engine, c, ids[:3])
    assert len(set(email.codes.values())) == 3 and email.exhausted == () and email.taken == 3
    sms = await reserve(engine, c, ids)  # the same contacts on another channel, plus two more
    assert {i: sms.codes[i] for i in ids[:3]} == email.codes and sms.taken == 2
    assert len(set(sms.codes.values())) == 5
    assert await counters(engine, "spring") == (10, 5)
    stock = await store.pool_stock(engine, "spring")
    assert (stock.available, stock.reserved, stock.assigned) == (5, 5, 0)


async def test_short_pool_leaves_contacts_exhausted(engine: AsyncEngine, tmp_path: Path) -> None:
    ids = await add_contacts(engine, 5)
    await import_codes(engine, tmp_path, 3)
    got = await reserve(engine, make_campaign(), ids)
    assert len(got.codes) == 3 and len(got.exhausted) == 2 and set(got.codes) | set(got.exhausted) == set(ids)
    again = await reserve(engine, make_campaign(), got.exhausted)
    assert again.codes == {} and again.exhausted == got.exhausted and again.taken == 0


async def test_commit_then_release_keeps_sent_codes(engine: AsyncEngine, tmp_path: Path) -> None:
    ids = await add_contacts(engine, 3)
    await add_campaign(engine)
    await import_codes(engine, tmp_path, 5)
    c = make_campaign()
    got = await reserve(engine, c, ids)
    async with engine.begin() as conn:
        assert await store.commit(conn, c.id, ids[:1], NOW) == 1
        assert await store.commit(conn, c.id, ids[:1], NOW) == 0  # already assigned
        released = await store.release(conn, c.id, ids, NOW)
    assert released == 2  # the assigned one stays with its contact
    async with engine.connect() as conn:
        rows = {r.code: r for r in await conn.execute(select(coupon_codes))}
    assert rows[got.codes[ids[0]]].state == "assigned" and rows[got.codes[ids[0]]].contact_id == ids[0]
    for i in ids[1:]:
        assert rows[got.codes[i]].state == "available" and rows[got.codes[i]].contact_id is None
    assert await counters(engine, "spring") == (5, 4)
    stock = await store.pool_stock(engine, "spring")
    assert (stock.available, stock.reserved, stock.assigned) == (4, 0, 1)


async def test_release_waits_for_other_channels_still_holding_the_code(engine: AsyncEngine, tmp_path: Path) -> None:
    ids = await add_contacts(engine, 2)
    await add_campaign(engine)
    await import_codes(engine, tmp_path, 5)
    c = make_campaign()
    got = await reserve(engine, c, ids)
    # contact 1: email failed for good, its SMS is still in flight; contact 2: both channels done badly
    await add_delivery(engine, c.id, ids[0], "email", "failed")
    await add_delivery(engine, c.id, ids[0], "sms", "sending")
    await add_delivery(engine, c.id, ids[1], "email", "failed")
    await add_delivery(engine, c.id, ids[1], "sms", "skipped")
    async with engine.begin() as conn:
        assert await store.release(conn, c.id, ids, NOW) == 1
    async with engine.connect() as conn:
        assert await store.held_codes(conn, c.id, ids) == {ids[0]: got.codes[ids[0]]}


async def test_generated_codes_are_recorded_and_forgotten_on_release(engine: AsyncEngine) -> None:
    ids = await add_contacts(engine, 3)
    await add_campaign(engine, "gen-camp")
    c = make_campaign("gen-camp", generate={"prefix": "MOM", "length": 10})
    got = await reserve(engine, c, ids, coupon_key=KEY)
    assert got.codes == {i: generate(KEY, "gen-camp", i, "MOM", 10) for i in ids} and got.exhausted == ()
    assert await reserve(engine, c, ids, coupon_key=KEY) == store.Reservation(got.codes)
    async with engine.begin() as conn:
        await store.commit(conn, c.id, ids[:1], NOW)
        assert await store.release(conn, c.id, ids, NOW) == 2
    async with engine.connect() as conn:
        rows = (await conn.execute(select(coupon_codes.c.pool, coupon_codes.c.code, coupon_codes.c.state))).all()
    assert [tuple(r) for r in rows] == [("gen:gen-camp", got.codes[ids[0]], "assigned")]
    with pytest.raises(ValueError, match="coupon_key"):
        await reserve(engine, c, ids)


async def test_a_generated_code_taken_by_another_contact_leaves_its_contact_without_one(engine: AsyncEngine) -> None:
    """A code's text already in the pool for another contact (issued under an earlier key): that
    insert conflicts, the contact is left exhausted; the others get theirs in the same batch."""
    ids = await add_contacts(engine, 4)
    await add_campaign(engine, "gen-camp")
    c = make_campaign("gen-camp", generate={"prefix": "MOM", "length": 10})
    clash = generate(KEY, "gen-camp", ids[1], "MOM", 10)
    async with engine.begin() as conn:  # the text contact 2 would get, held by contact 4 already
        await conn.execute(
            insert(coupon_codes).values(
                pool="gen:gen-camp", code=clash, campaign_id="gen-camp", contact_id=ids[3], state="reserved",
                reserved_at=NOW,
            )
        )  # fmt: skip
    got = await reserve(engine, c, ids, coupon_key=KEY)
    assert got.codes == {i: generate(KEY, "gen-camp", i, "MOM", 10) for i in ids[:1] + ids[2:3]} | {ids[3]: clash}
    assert got.exhausted == (ids[1],) and got.taken == 2  # new codes: ids[3] holds its own, ids[1] got none


async def test_generated_code_too_short_for_the_contact_id(engine: AsyncEngine) -> None:
    small, big = await add_contacts(engine, 1, start=5), await add_contacts(engine, 1, start=40)
    c = make_campaign("tiny", generate={"length": 6})  # length 6 carries contact ids up to 31
    with capture_logs() as logs:
        got = await reserve(engine, c, small + big, coupon_key=KEY)
    assert list(got.codes) == small and got.exhausted == tuple(big)
    assert [e["event"] for e in logs] == ["coupon_code_does_not_fit"] and logs[0]["max_contact_id"] == 31


async def test_no_coupon_no_contacts(engine: AsyncEngine) -> None:
    plain = make_campaign().model_copy(update={"coupon": None})
    assert await reserve(engine, plain, [1, 2]) == store.Reservation()
    assert await reserve(engine, make_campaign(), []) == store.Reservation()


# ---------------------------------------------------------------- stock warnings and the plan check


async def test_low_stock_and_exhaustion_are_logged_once_per_crossing(engine: AsyncEngine, tmp_path: Path) -> None:
    ids = await add_contacts(engine, 120)
    await import_codes(engine, tmp_path, 100)
    c = make_campaign()
    with capture_logs() as logs:
        for start in range(0, 120, 7):  # batches of 7: 100 → 93 → ... → 9 → 2 → 0
            await reserve(engine, c, ids[start : start + 7])
    events = [(e["event"], e.get("available")) for e in logs]
    assert events == [("coupon_pool_low", 9), ("coupon_pool_exhausted", None)]
    assert logs[0]["percent_left"] == 9.0 and logs[0]["pool"] == "spring" and logs[1]["short"] == 5


async def test_plan_check_counts_planned_recipients_without_a_code(engine: AsyncEngine, tmp_path: Path) -> None:
    ids = await add_contacts(engine, 6)
    await add_campaign(engine)
    await import_codes(engine, tmp_path, 4)
    c = make_campaign()
    for i in ids:
        await add_delivery(engine, c.id, i, "email", "planned")
        await add_delivery(engine, c.id, i, "sms", "planned")
    check = await store.coupon_check(engine, c)
    assert check is not None and (check.needed, check.available, check.shortfall, check.ok) == (6, 4, 2, False)
    await reserve(engine, c, ids[:2])
    check = await store.coupon_check(engine, c)
    assert (check.needed, check.available, check.shortfall, check.ok) == (4, 2, 2, False)
    await import_codes(engine, tmp_path, 10, prefix="MORE")
    assert (await store.coupon_check(engine, c)).ok


async def test_plan_check_for_generated_codes(engine: AsyncEngine) -> None:
    ids = await add_contacts(engine, 2, start=31)
    await add_campaign(engine, "tiny")
    c = make_campaign("tiny", generate={"length": 6})
    for i in ids:
        await add_delivery(engine, c.id, i, "email", "planned")
    check = await store.coupon_check(engine, c)
    assert check is not None and not check.ok and "up to 31" in check.message and "32" in check.message


# ---------------------------------------------------------------- concurrency


async def test_concurrent_reservers_never_share_a_code(engine: AsyncEngine, tmp_path: Path) -> None:
    """Eight tasks, each on its own connection and transaction, reserve at once for overlapping
    contacts (the same person's email and SMS claimed by different workers): every code goes to
    at most one contact, every contact holds exactly one code."""
    ids = await add_contacts(engine, 400)
    await import_codes(engine, tmp_path, 450)
    c = make_campaign()
    batches = [ids[i : i + 20] for i in range(0, 400, 20)]
    work = batches + batches[::-1]  # every batch twice, in opposite orders

    async def worker(n: int) -> list[store.Reservation]:
        done = []
        for batch in work[n::8]:
            done.append(await reserve(engine, c, batch))
            await asyncio.sleep(0)
        return done

    results = [r for rs in await asyncio.gather(*(worker(n) for n in range(8))) for r in rs]
    per_contact: dict[int, set[str]] = {}
    for r in results:
        assert r.exhausted == ()
        for contact, code in r.codes.items():
            per_contact.setdefault(contact, set()).add(code)
    assert set(per_contact) == set(ids) and all(len(v) == 1 for v in per_contact.values())
    handed = [next(iter(v)) for v in per_contact.values()]
    assert len(set(handed)) == 400
    async with engine.connect() as conn:
        rows = (await conn.execute(select(coupon_codes.c.contact_id).where(coupon_codes.c.state == "reserved"))).all()
    assert len(rows) == 400 and len({r.contact_id for r in rows}) == 400
    assert await counters(engine, "spring") == (450, 50)
    assert sum(r.taken for r in results) == 400


async def test_locked_codes_are_skipped_not_waited_for_on_postgresql(engine: AsyncEngine, tmp_path: Path) -> None:
    """While another transaction holds row locks on the first codes of the pool, a reserver takes
    the next ones at once (SKIP LOCKED) instead of waiting or taking the same ones."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has a single writer: reservers queue behind BEGIN IMMEDIATE instead")
    ids = await add_contacts(engine, 5)
    await import_codes(engine, tmp_path, 20)
    async with engine.connect() as other:
        await other.begin()
        locked = (
            (await other.execute(select(coupon_codes.c.code).order_by(coupon_codes.c.id).limit(10).with_for_update()))
            .scalars()
            .all()
        )
        got = await asyncio.wait_for(reserve(engine, make_campaign(), ids), timeout=10)
        await other.rollback()
    assert len(got.codes) == 5 and not set(got.codes.values()) & set(locked)
