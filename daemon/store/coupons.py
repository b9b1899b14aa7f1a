"""Coupon codes in the database: pool imports, stock, and the reserve → commit | release lifecycle.

One code per (campaign, contact), shared by every channel and slot of that campaign (a UNIQUE
index on (campaign_id, contact_id) enforces it).

- **Pools** (``coupon.pool``): codes imported with ``import_pool`` wait as ``available``.
  ``reserve`` hands out available codes: PostgreSQL picks them ``FOR UPDATE SKIP LOCKED`` so
  several workers take disjoint codes side by side; SQLite has one writer (run it in a
  ``BEGIN IMMEDIATE`` transaction). The UPDATE is guarded by ``state = 'available'`` either way.
  ``coupon_pools`` keeps each pool's total and available counts in the same transactions, so the
  low-stock warning fires exactly once per crossing, without counting a million rows per batch.
- **Generated codes** (``coupon.generate``) are computed (``topslot.coupons.codes``) and recorded
  as rows of pool ``gen:<campaign>`` so reports join redemptions the same way for both sources.

States: ``available`` → ``reserved`` (row claimed) → ``assigned`` (a provider accepted a message
carrying it). ``release`` gives a reserved code back (a generated one is forgotten) when its
message failed for good or was skipped, unless another delivery of the same campaign and contact
still holds it. Call every function inside the caller's write transaction
(``engine.execution_options(**IMMEDIATE).begin()``), normally the one that moves the ledger rows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Integer,
    Update,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from topslot.campaign import Campaign
from topslot.coupons import codes as generated
from topslot.coupons.pool_file import GENERATED_POOL_PREFIX, PoolLine, check_pool_name, read_pool_lines
from topslot.coupons.stock import (
    PoolStock,
    StockCheck,
    check_generated,
    check_pool,
    crossed_empty,
    crossed_low,
)
from topslot.delivery import IN_FLIGHT, MAYBE_HANDED_OVER
from topslot.delivery import DeliveryState as S
from topslot.errors import InvalidInput, Problem
from topslot.imports.lines import open_lines
from topslot.imports.report import ImportReport, Progress
from topslot.logs import get_logger
from topslot.store.db import IMMEDIATE
from topslot.store.dialect import among, json_rows, unnest_rows, upsert_insert
from topslot.store.schema import coupon_codes, coupon_pools, deliveries

DEFAULT_BATCH_SIZE = 1000
# a delivery in one of these states may carry (or has carried) its coupon: never give it back. Being
# sent, perhaps handed over, or waiting to be tried again (``retry_wait``: its message was built).
HOLDING_STATES = tuple(sorted(IN_FLIGHT | MAYBE_HANDED_OVER | {S.RETRY_WAIT}))
_RESERVE_ATTEMPTS = 5
log = get_logger("coupons")


@dataclass(frozen=True, slots=True)
class Reservation:
    """What ``reserve`` handed out: a code per contact, and the contacts left without one."""

    codes: dict[int, str] = field(default_factory=dict)
    exhausted: tuple[int, ...] = ()  # pool ran out (or a generated code does not fit): apply on_exhausted
    taken: int = 0  # codes newly taken from the pool by this call


def generated_pool(campaign_id: str) -> str:
    return GENERATED_POOL_PREFIX + campaign_id


def campaign_pool(campaign: Campaign) -> str | None:
    """The pool rows of this campaign's codes live in (``gen:<id>`` for generated codes)."""
    if campaign.coupon is None:
        return None
    return campaign.coupon.pool if campaign.coupon.pool is not None else generated_pool(campaign.id)


# ---------------------------------------------------------------- import


async def import_pool(
    engine: AsyncEngine,
    pool: str,
    path: Path,
    *,
    now: datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    encoding: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Add the codes of ``path`` to ``pool``, streamed in batches of ``batch_size``. ``encoding``:
    as for every import (``topslot.imports.lines.open_lines``: a BOM decides, else UTF-8).

    Idempotent: codes already in the pool are counted as ``ignored``. Rejected (each with a
    located problem): invalid codes, a code repeated in the file (every repeat after the first),
    a code that already belongs to another pool.
    """
    why = check_pool_name(pool)
    if why:
        raise InvalidInput([Problem(str(path), 0, 0, why)])
    report = ImportReport()
    writer = engine.execution_options(**IMMEDIATE)
    seen: set[int] = set()  # 64-bit hashes of the codes read so far: ~60 MB for 1M codes
    repeats: dict[str, list[int]] = {}  # code → lines of its repeats (confirmed by a second pass)
    batch: list[PoolLine] = []
    with open_lines(path, encoding) as lines:
        for item in read_pool_lines(lines, str(path)):
            if isinstance(item, Problem):
                report.reject([item])
                continue
            digest = hash(item.code)  # a collision is re-checked exactly by the second pass
            if digest in seen:
                repeats.setdefault(item.code, []).append(item.line)
                continue
            seen.add(digest)
            batch.append(item)
            if len(batch) >= batch_size:
                await _import_batch(writer, pool, batch, now, report, path)
                batch = []
                if progress is not None:
                    progress(report.rows)
    if repeats:
        batch += _report_repeats(path, repeats, report, encoding)
    if batch:
        await _import_batch(writer, pool, batch, now, report, path)
    if progress is not None:
        progress(report.rows)
    report.problems.sort()
    return report


async def _import_batch(
    engine: AsyncEngine, pool: str, batch: list[PoolLine], now: datetime, report: ImportReport, path: Path
) -> None:
    async with engine.begin() as conn:
        elsewhere = await conn.execute(
            select(coupon_codes.c.code, coupon_codes.c.pool).where(
                coupon_codes.c.code.in_([p.code for p in batch]), coupon_codes.c.pool != pool
            )
        )
        other_pool = {r.code: r.pool for r in elsewhere}
        rows = []
        for item in batch:
            if item.code in other_pool:
                why = f"code '{item.code}' is already in pool {other_pool[item.code]}"
                report.reject([Problem(str(path), item.line, 1, why)])
            else:
                rows.append({"pool": pool, "code": item.code, "state": "available"})
        inserted = 0
        if rows:
            # executemany: compiled once and cached (a multi-VALUES statement is compiled per batch)
            stmt = upsert_insert(conn, coupon_codes).on_conflict_do_nothing().returning(coupon_codes.c.id)
            inserted = len((await conn.execute(stmt, rows)).all())
        await _add_to_pool(conn, pool, inserted, now)
    report.imported += inserted
    report.ignored += len(rows) - inserted


async def _add_to_pool(conn: AsyncConnection, pool: str, count: int, now: datetime) -> None:
    stmt = upsert_insert(conn, coupon_pools).values(
        name=pool, total=count, available=count, created_at=now, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[coupon_pools.c.name],
        set_={
            "total": coupon_pools.c.total + stmt.excluded.total,
            "available": coupon_pools.c.available + stmt.excluded.available,
            "updated_at": now,
        },
    )
    await conn.execute(stmt)


def _report_repeats(
    path: Path, repeats: dict[str, list[int]], report: ImportReport, encoding: str | None
) -> list[PoolLine]:
    """Second pass over the file for the suspected repeats only: report each with the line of the
    first use. Returns the codes that only collided by hash with another code (still to import)."""
    first: dict[str, int] = {}
    with open_lines(path, encoding) as lines:
        for item in read_pool_lines(lines, str(path)):
            if isinstance(item, PoolLine) and item.code in repeats and item.code not in first:
                first[item.code] = item.line
    not_repeats = []
    for code, lines_ in repeats.items():
        for line in lines_:
            if first[code] == line:
                not_repeats.append(PoolLine(line, code))
            else:
                report.reject([Problem(str(path), line, 1, f"code '{code}' repeats line {first[code]}")])
    return not_repeats


# ---------------------------------------------------------------- stock


async def pool_stock(conn: AsyncConnection | AsyncEngine, pool: str) -> PoolStock:
    """Available / reserved / assigned codes of a pool, counted (exact, not the counters)."""
    stmt = select(coupon_codes.c.state, func.count()).where(coupon_codes.c.pool == pool).group_by(coupon_codes.c.state)
    if isinstance(conn, AsyncEngine):
        async with conn.connect() as c:
            rows = (await c.execute(stmt)).all()
    else:
        rows = (await conn.execute(stmt)).all()
    counts = {state: n for state, n in rows}
    return PoolStock(pool, counts.get("available", 0), counts.get("reserved", 0), counts.get("assigned", 0))


async def pool_exists(conn: AsyncConnection, pool: str) -> bool:
    return (await conn.execute(select(coupon_pools.c.name).where(coupon_pools.c.name == pool))).first() is not None


async def coupon_check(
    engine: AsyncEngine, campaign: Campaign, recipients: Collection[int] | None = None
) -> StockCheck | None:
    """For ``plan``: do the codes suffice for the recipients still without a code? Those are the
    ledger's planned rows, or — for a dry run — the given contact ids."""
    if campaign.coupon is None:
        return None
    async with engine.connect() as conn:
        if recipients is None:
            pending = (
                select(deliveries.c.contact_id)
                .where(
                    deliveries.c.campaign_id == campaign.id,
                    deliveries.c.state == S.PLANNED,
                    ~exists().where(
                        coupon_codes.c.campaign_id == deliveries.c.campaign_id,
                        coupon_codes.c.contact_id == deliveries.c.contact_id,
                    ),
                )
                .distinct()
                .subquery()
            )
            needed, highest = (await conn.execute(select(func.count(), func.max(pending.c.contact_id)))).one()
        else:
            needed, highest = len(recipients), max(recipients, default=None)
        if campaign.coupon.generate is not None:
            length = campaign.coupon.generate.length
            return check_generated(needed, highest, generated.max_contact_id(length), length)
        pool = campaign.coupon.pool or ""
        counters = (
            await conn.execute(
                select(coupon_pools.c.total, coupon_pools.c.available).where(coupon_pools.c.name == pool)
            )
        ).first()
    total, available = (counters.total, counters.available) if counters else (0, 0)
    return check_pool(pool, needed, available, campaign.coupon.on_exhausted, total)


# ---------------------------------------------------------------- lifecycle


async def held_codes(conn: AsyncConnection, campaign_id: str, contact_ids: Sequence[int]) -> dict[int, str]:
    """The code each of these contacts already holds (reserved or assigned) in this campaign."""
    if not contact_ids:
        return {}
    rows = await conn.execute(
        select(coupon_codes.c.contact_id, coupon_codes.c.code).where(
            coupon_codes.c.campaign_id == campaign_id, _one_of(conn, coupon_codes.c.contact_id, contact_ids)
        )
    )
    return {r.contact_id: r.code for r in rows}


def _one_of(conn: AsyncConnection, column: Any, ids: Sequence[int]) -> Any:
    """``column IN (ids)``; on PostgreSQL ``= ANY(:array)``: one parameter, one cached plan."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(Integer)))
    return column.in_(list(ids))


async def reserve(
    conn: AsyncConnection,
    campaign: Campaign,
    contact_ids: Iterable[int],
    now: datetime,
    *,
    coupon_key: bytes | None = None,
) -> Reservation:
    """A code for each contact (reusing the one it already holds in this campaign).

    ``coupon_key`` (see ``topslot.coupons.codes.coupon_key``) is needed for generated codes.
    Contacts left without a code are listed in ``exhausted``: apply ``coupon.on_exhausted``
    (``topslot.coupons.stock.on_exhausted``).
    """
    coupon = campaign.coupon
    ids = sorted(set(contact_ids))
    if coupon is None or not ids:
        return Reservation()
    if coupon.generate is not None:
        if coupon_key is None:
            raise ValueError(f"campaign {campaign.id} generates coupons: reserve needs coupon_key")
        # inserted first, not looked up first: a contact holding a code already (a retry, another
        # channel) conflicts and is looked up then, so a batch of new contacts is one statement
        return await _reserve_generated(conn, campaign, ids, now, coupon_key)
    held = await held_codes(conn, campaign.id, ids)
    missing = [i for i in ids if i not in held]
    if not missing:
        return Reservation(held)
    return await _reserve_pooled(conn, campaign, coupon.pool or "", held, missing, now)


async def _reserve_generated(
    conn: AsyncConnection, campaign: Campaign, ids: list[int], now: datetime, key: bytes
) -> Reservation:
    spec = campaign.coupon.generate  # type: ignore[union-attr]
    scheme = generated.scheme(key, campaign.id, spec.prefix, spec.length)  # type: ignore[union-attr]
    limit = generated.max_contact_id(scheme.length)
    fits = [i for i in ids if i <= limit]
    too_big = tuple(i for i in ids if i > limit)
    held: dict[int, str] = {}
    taken = 0
    if too_big:
        log.error(
            "coupon_code_does_not_fit",
            campaign_id=campaign.id,
            contacts=len(too_big),
            length=scheme.length,
            max_contact_id=limit,
        )
    if fits:
        pool = generated_pool(campaign.id)
        made = {i: scheme.code(i) for i in fits}
        held, taken = await _insert_generated(conn, campaign.id, pool, made, now)
    # still without a code: its text clashed with a code another contact got under a rotated key
    exhausted = too_big + tuple(i for i in fits if i not in held)
    return Reservation(held, tuple(sorted(exhausted)), taken)


async def _insert_generated(
    conn: AsyncConnection, campaign_id: str, pool: str, made: dict[int, str], now: datetime
) -> tuple[dict[int, str], int]:
    """The generated codes ``made`` (contact → code) inserted by one statement (``_insert_made``), the
    rows as one array per column (PostgreSQL) or one JSON text (SQLite), without ``RETURNING``: on
    SQLite a multi-row ``INSERT … RETURNING`` took SQLAlchemy's work on a dict per row and read the
    codes back row by row (26.6 → 21.2 ms for 1,000 codes, the reservation's transaction, medians in
    bench/send_pipeline.py). Returns the code each contact now holds, and how many were inserted:
    when all were, the codes made; otherwise (a contact holding a code already, or a clash) the
    contacts' codes as found."""
    if conn.dialect.name == "postgresql":
        rows: dict[str, Any] = {"contact_id": list(made), "code": list(made.values())}
    else:
        rows = {"pairs": [[contact, code] for contact, code in made.items()]}
    shared = {"pool": pool, "campaign_id": campaign_id, "now": now}
    taken = (await conn.execute(_insert_made(conn.dialect.name), rows | shared)).rowcount
    if taken == len(made):
        return made, taken
    return await held_codes(conn, campaign_id, list(made)), taken


@cache
def _insert_made(dialect: str) -> Any:
    """``INSERT … SELECT … ON CONFLICT DO NOTHING`` of generated codes, one row per contact: from
    ``unnest`` of the arrays ``contact_id`` and ``code`` (PostgreSQL), or ``json_each`` of ``pairs``,
    ``[contact_id, code]`` each (SQLite); built once per dialect."""
    also = (
        bindparam("pool", type_=coupon_codes.c.pool.type),
        bindparam("campaign_id", type_=coupon_codes.c.campaign_id.type),
        literal("reserved"),
        bindparam("now", type_=coupon_codes.c.reserved_at.type),
    )
    names = ["contact_id", "code"]
    if dialect == "postgresql":
        rows = unnest_rows(coupon_codes, names, *also)
    else:  # an upsert's SELECT needs a WHERE on SQLite, or its ON CONFLICT would read as a join's
        rows = select(*json_rows("pairs", 2), *also).where(true())
    columns = [*names, "pool", "campaign_id", "state", "reserved_at"]
    return upsert_insert(dialect, coupon_codes).from_select(columns, rows).on_conflict_do_nothing()


async def _reserve_pooled(
    conn: AsyncConnection, campaign: Campaign, pool: str, held: dict[int, str], missing: list[int], now: datetime
) -> Reservation:
    codes = dict(held)
    for _ in range(_RESERVE_ATTEMPTS):
        try:
            async with conn.begin_nested():
                got = await _take(conn, campaign.id, pool, missing, now)
            break
        except IntegrityError:
            # another worker reserved for some of these contacts at the same moment: use theirs
            codes |= await held_codes(conn, campaign.id, missing)
            missing = [i for i in missing if i not in codes]
    else:
        raise RuntimeError(f"could not reserve coupons of pool {pool} after {_RESERVE_ATTEMPTS} attempts")
    codes |= got
    taken = len(got)
    exhausted = tuple(i for i in missing if i not in got)
    if taken:
        await _count_taken(conn, campaign.id, pool, taken, exhausted, now)
    return Reservation(codes, exhausted, taken)


async def _take(
    conn: AsyncConnection, campaign_id: str, pool: str, contact_ids: list[int], now: datetime
) -> dict[int, str]:
    """Pair available codes of ``pool`` with ``contact_ids``; fewer if the pool runs short."""
    if not contact_ids:
        return {}
    picked = (
        (
            await conn.execute(
                select(coupon_codes.c.id)
                .where(coupon_codes.c.pool == pool, coupon_codes.c.state == "available")
                .order_by(coupon_codes.c.id)
                .limit(len(contact_ids))
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
    if not picked:
        return {}
    contacts = contact_ids[: len(picked)]
    # Guarded by state = 'available': the rows are ours (locked, or we are the only writer), and
    # even if they were not, a code already taken is never overwritten.
    if conn.dialect.name == "postgresql":
        # one statement pairing code i with contact i: UPDATE ... FROM unnest(ids, contacts)
        pairs = (
            func.unnest(
                bindparam("code_ids", picked, type_=ARRAY(BigInteger)),
                bindparam("contacts", contacts, type_=ARRAY(Integer)),
            )
            .table_valued("code_id", "contact")
            .render_derived(name="pairs")
        )
        stmt = (
            update(coupon_codes)
            .where(coupon_codes.c.id == pairs.c.code_id, coupon_codes.c.state == "available")
            .values(state="reserved", campaign_id=campaign_id, contact_id=pairs.c.contact, reserved_at=now)
            .returning(coupon_codes.c.contact_id, coupon_codes.c.code)
        )
        return {r.contact_id: r.code for r in await conn.execute(stmt)}
    # SQLite (in-process, one writer): executemany of a cached statement, then read back
    pairs_rows = [{"code_id": c, "contact": k} for c, k in zip(picked, contacts, strict=True)]
    await conn.execute(_RESERVE_ONE.values(campaign_id=campaign_id, reserved_at=now), pairs_rows)
    return await held_codes(conn, campaign_id, contacts)


_RESERVE_ONE = (
    update(coupon_codes)
    .where(coupon_codes.c.id == bindparam("code_id"), coupon_codes.c.state == "available")
    .values(state="reserved", contact_id=bindparam("contact"))
)


async def _count_taken(
    conn: AsyncConnection, campaign_id: str, pool: str, taken: int, exhausted: tuple[int, ...], now: datetime
) -> None:
    """Move the pool's counter; warn on the one reservation that crossed 10 % left, or emptied it."""
    row = (
        await conn.execute(
            update(coupon_pools)
            .where(coupon_pools.c.name == pool)
            .values(available=coupon_pools.c.available - taken, updated_at=now)
            .returning(coupon_pools.c.available, coupon_pools.c.total)
        )
    ).first()
    if row is None:
        return
    after, total = row.available, row.total
    before = after + taken
    if crossed_low(before, after, total):
        log.warning(
            "coupon_pool_low",
            campaign_id=campaign_id,
            pool=pool,
            available=after,
            total=total,
            percent_left=round(100 * after / total, 1) if total else 0.0,
        )
    if crossed_empty(before, after):
        log.warning("coupon_pool_exhausted", campaign_id=campaign_id, pool=pool, total=total, short=len(exhausted))


async def commit(conn: AsyncConnection, campaign_id: str, contact_ids: Iterable[int], now: datetime) -> int:
    """Mark these contacts' codes assigned (a provider accepted a message carrying them)."""
    ids = sorted(set(contact_ids))
    if not ids:
        return 0
    result = await conn.execute(_commit(conn.dialect.name), {"campaign": campaign_id, "ids": ids, "now": now})
    return result.rowcount or 0


@cache
def _commit(dialect: str) -> Update:
    """Built once per dialect: a chunk's ids are one parameter (``among``), not a hundred coerced literals."""
    return (
        update(coupon_codes)
        .where(
            coupon_codes.c.campaign_id == bindparam("campaign"),
            among(dialect, coupon_codes.c.contact_id),
            coupon_codes.c.state == "reserved",
        )
        .values(state="assigned", assigned_at=bindparam("now", type_=coupon_codes.c.assigned_at.type))
    )


async def release(conn: AsyncConnection, campaign_id: str, contact_ids: Iterable[int], now: datetime) -> int:
    """Give back reserved codes of these contacts whose messages failed for good or were skipped.

    Call it after moving their ledger rows out of the holding states, in the same transaction:
    a code that another delivery of the campaign (another channel, a later slot in flight) still
    holds, or that was already assigned, is kept. Pool codes become available again; generated
    codes are forgotten (the same code comes back if the contact is reserved again).
    """
    ids = sorted(set(contact_ids))
    if not ids:
        return 0
    still_held = exists().where(
        deliveries.c.campaign_id == coupon_codes.c.campaign_id,
        deliveries.c.contact_id == coupon_codes.c.contact_id,
        deliveries.c.state.in_(HOLDING_STATES),
    )
    releasable = and_(
        coupon_codes.c.campaign_id == campaign_id,
        coupon_codes.c.contact_id.in_(ids),
        coupon_codes.c.state == "reserved",
        ~still_held,
    )
    gen_pool = generated_pool(campaign_id)
    forgotten = await conn.execute(delete(coupon_codes).where(releasable, coupon_codes.c.pool == gen_pool))
    returned = (
        (
            await conn.execute(
                update(coupon_codes)
                .where(releasable, coupon_codes.c.pool != gen_pool)
                .values(state="available", campaign_id=None, contact_id=None, reserved_at=None)
                .returning(coupon_codes.c.pool)
            )
        )
        .scalars()
        .all()
    )
    per_pool: dict[str, int] = {}
    for pool in returned:
        per_pool[pool] = per_pool.get(pool, 0) + 1
    for pool, count in sorted(per_pool.items()):
        await conn.execute(
            update(coupon_pools)
            .where(coupon_pools.c.name == pool)
            .values(available=coupon_pools.c.available + count, updated_at=now)
        )
    return (forgotten.rowcount or 0) + len(returned)


async def find_code(conn: AsyncConnection, code: str, pool: str | None = None) -> list[dict[str, object]]:
    """Rows holding exactly ``code`` (in ``pool`` if given): pool, state, campaign, contact."""
    stmt = select(
        coupon_codes.c.pool,
        coupon_codes.c.code,
        coupon_codes.c.state,
        coupon_codes.c.campaign_id,
        coupon_codes.c.contact_id,
    ).where(coupon_codes.c.code == code)
    if pool is not None:
        stmt = stmt.where(coupon_codes.c.pool == pool)
    return [dict(r._mapping) for r in await conn.execute(stmt)]
