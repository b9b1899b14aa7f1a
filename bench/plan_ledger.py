"""Benchmark: plan 1,000,000 contacts over 30 time zones into the delivery ledger.

Target (issue 3): ≤ 60 s on SQLite and on PostgreSQL on a 2-core machine, peak memory ≤ 250 MB.

The contacts are bulk-inserted first (not timed: contact import has its own benchmark), then a
fresh child process runs the real planning path — audience stream → pure planner → batched ledger
upserts → retirement sweep → dispatch-start sizing — and reports its time and peak RSS. A second
plan run (the idempotent re-plan after a restart) is timed too.

    python bench/plan_ledger.py                      # SQLite, 1,000,000 contacts
    python bench/plan_ledger.py --contacts 100000
    python bench/plan_ledger.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import func, insert, select, text

from topslot.campaign import Campaign
from topslot.scheduling.plan_run import plan_campaign
from topslot.settings import Settings
from topslot.store import ledger
from topslot.store.db import open_engine, upgrade
from topslot.store.schema import consents, contacts, deliveries

NOW = datetime(2027, 5, 1, tzinfo=UTC)
ZONES = [
    ("Asia/Shanghai", "CN"), ("Asia/Tokyo", "JP"), ("Asia/Seoul", "KR"), ("Asia/Singapore", "SG"),
    ("Asia/Kolkata", "IN"), ("Asia/Dubai", "AE"), ("Asia/Jakarta", "ID"), ("Asia/Bangkok", "TH"),
    ("Asia/Manila", "PH"), ("Asia/Ho_Chi_Minh", "VN"), ("Australia/Sydney", "AU"), ("Australia/Perth", "AU"),
    ("Pacific/Auckland", "NZ"), ("Europe/London", "GB"), ("Europe/Paris", "FR"), ("Europe/Berlin", "DE"),
    ("Europe/Madrid", "ES"), ("Europe/Rome", "IT"), ("Europe/Warsaw", "PL"), ("Europe/Istanbul", "TR"),
    ("Africa/Johannesburg", "ZA"), ("Africa/Lagos", "NG"), ("America/New_York", "US"), ("America/Chicago", "US"),
    ("America/Denver", "US"), ("America/Los_Angeles", "US"), ("America/Toronto", "CA"), ("America/Mexico_City", "MX"),
    ("America/Sao_Paulo", "BR"), ("America/Argentina/Buenos_Aires", "AR"),
]  # fmt: skip

CAMPAIGN = Campaign.model_validate(
    {
        "id": "bench-plan",
        "name": "Planning benchmark",
        "channels": ["email"],
        "audience": {"all": [{"attribute": "gender", "equals": "female"}]},
        "schedule": {"start": date(2027, 5, 6), "end": date(2027, 5, 9), "days": "workdays"},
        "landing_page": {"url": "https://shop.example.com/"},
        "content": {"email": {"from": "Shop <news@shop.example.com>", "subject": "Hi", "html": "x.html.j2"}},
    }
)


async def seed(url: str, schema: str | None, n: int) -> None:
    engine = open_engine(url, schema=schema)
    await upgrade(engine)
    rng = random.Random(7)
    batch = 20_000
    async with engine.begin() as conn:
        for start in range(0, n, batch):
            people, grants = [], []
            for i in range(start, min(n, start + batch)):
                zone, country = ZONES[i % len(ZONES)]
                people.append(
                    {
                        "id": i + 1,
                        "external_id": f"b{i}",
                        "email": f"user{i}@example.com",
                        "gender": "female" if rng.random() < 0.9 else "male",
                        "country": country,
                        "timezone": zone,
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                )
                grants.append({"contact_id": i + 1, "channel": "email", "granted": True, "recorded_at": NOW})
            await conn.execute(insert(contacts), people)
            await conn.execute(insert(consents), grants)
    await engine.dispose()


async def plan_phase(url: str, schema: str | None) -> dict[str, float]:
    engine = open_engine(url, schema=schema)
    settings = Settings(default_timezone="UTC", default_country="US")
    await ledger.record_campaign(engine, CAMPAIGN, "bench", NOW)
    t0 = time.perf_counter()
    outcome = await plan_campaign(engine, CAMPAIGN, settings, NOW, write=True)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    await plan_campaign(engine, CAMPAIGN, settings, NOW, write=True)
    second = time.perf_counter() - t0
    async with engine.connect() as conn:
        rows = await conn.scalar(select(func.count()).select_from(deliveries))
    await engine.dispose()
    return {
        "rows": float(rows or 0),
        "written": float(outcome.written),
        "first_s": first,
        "replan_s": second,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_engine(label: str, url: str, schema: str | None, n: int) -> None:
    t0 = time.perf_counter()
    asyncio.run(seed(url, schema, n))
    print(f"[{label}] seeded {n:,} contacts in {time.perf_counter() - t0:.1f} s", flush=True)
    child = subprocess.run(
        [sys.executable, __file__, "--child", url, "--schema", schema or ""],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    r = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"[{label}] planned {int(r['written']):,} deliveries for {n:,} contacts in {r['first_s']:.1f} s "
        f"({r['written'] / r['first_s']:,.0f} rows/s, {n / r['first_s']:,.0f} contacts/s); "
        f"idempotent re-plan {r['replan_s']:.1f} s; ledger rows {int(r['rows']):,}; "
        f"peak RSS {r['peak_rss_mb']:.0f} MB  (targets: ≤ 60 s, ≤ 250 MB)",
        flush=True,
    )


async def pg_schema(url: str, drop: str | None = None) -> str:
    admin = open_engine(url)
    name = drop or f"bench_{uuid.uuid4().hex[:10]}"
    async with admin.begin() as conn:
        if drop:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))  # generated name
        else:
            await conn.execute(text(f'CREATE SCHEMA "{name}"'))
    await admin.dispose()
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--pg", help="also run on this PostgreSQL URL (in a throwaway schema)")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(plan_phase(args.child, args.schema or None))))
        return
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            run_engine("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", None, args.contacts)
    if args.pg:
        schema = asyncio.run(pg_schema(args.pg))
        try:
            run_engine("postgresql", args.pg, schema, args.contacts)
        finally:
            asyncio.run(pg_schema(args.pg, drop=schema))


if __name__ == "__main__":
    main()
