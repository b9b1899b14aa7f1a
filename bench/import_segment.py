"""Benchmark: import 100,000 generated contacts (with ~3 purchases each) and count a segment.

    .venv/bin/python bench/import_segment.py [--contacts 100000] [--pg [URL]]

SQLite always (a fresh file in a temp dir); PostgreSQL too with --pg (URL defaults to
TOPSLOT_BENCH_DATABASE_URL), in a throw-away schema. Targets on the 2-core reference machine:
import ≤ 20 s, segment count ≤ 2 s on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from example_data import CONTACT_COLUMNS, EVENT_COLUMNS, contacts, events, write_csv  # noqa: E402

from topslot.campaign import Audience  # noqa: E402
from topslot.store.audience import count_segment  # noqa: E402
from topslot.store.contacts import import_contacts  # noqa: E402
from topslot.store.db import open_engine, upgrade  # noqa: E402
from topslot.store.events import import_events  # noqa: E402

# The example campaign's audience (config/campaigns/mothers-day-2027.yaml), evaluated on its first day.
AUDIENCE = Audience.model_validate(
    {
        "all": [
            {"attribute": "gender", "equals": "female"},
            {"attribute": "age", "between": [30, 50]},
            {"purchased": {"category": "cosmetics", "within_days": 365}},
        ],
        "exclude_tags": ["staff"],
    }
)
AT = datetime(2027, 5, 6, tzinfo=UTC)
TARGET_IMPORT_S = 20.0  # issue 15: 100,000 contacts + ~330,000 events
TARGET_COUNT_S = 2.0


class _Campaign:  # count_segment only reads .audience
    audience = AUDIENCE


async def run(label: str, url: str, schema: str | None, contacts_csv: Path, events_csv: Path, n: int) -> None:
    engine = open_engine(url, schema=schema)
    try:
        await upgrade(engine)
        t0 = time.perf_counter()
        c_report = await import_contacts(engine, contacts_csv, now=AT, default_country="US")
        t1 = time.perf_counter()
        e_report = await import_events(engine, events_csv)
        t2 = time.perf_counter()
        assert c_report.rejected == 0 and e_report.rejected == 0, (c_report.problems[:5], e_report.problems[:5])
        times, count = [], 0
        for _ in range(5):
            s = time.perf_counter()
            count = await count_segment(engine, _Campaign, AT)  # type: ignore[arg-type]
            times.append(time.perf_counter() - s)
    finally:
        await engine.dispose()
    contacts_s, events_s = t1 - t0, t2 - t1
    total = contacts_s + events_s
    median = statistics.median(times)
    print(f"[{label}]")
    print(f"  contacts: {c_report.imported:,} in {contacts_s:.2f} s ({c_report.imported / contacts_s:,.0f} rows/s)")
    print(f"  events:   {e_report.imported:,} in {events_s:.2f} s ({e_report.imported / events_s:,.0f} rows/s)")
    print(f"  import total: {total:.2f} s (target ≤ {TARGET_IMPORT_S:.0f} s) {'OK' if total <= TARGET_IMPORT_S else 'SLOW'}")
    print(
        f"  segment count: {count:,} of {n:,} contacts; median of 5 {median * 1000:.0f} ms "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}; target ≤ {TARGET_COUNT_S:.0f} s) "
        f"{'OK' if median <= TARGET_COUNT_S else 'SLOW'}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--pg", nargs="?", const=os.environ.get("TOPSLOT_BENCH_DATABASE_URL", ""), default=None)
    args = parser.parse_args()
    pg_url = args.pg if args.pg is not None else os.environ.get("TOPSLOT_BENCH_DATABASE_URL")
    if args.pg == "":
        parser.error("--pg needs a URL or TOPSLOT_BENCH_DATABASE_URL")

    with tempfile.TemporaryDirectory(prefix="topslot-bench-") as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        people = list(contacts(args.contacts, seed=1))
        contacts_csv, events_csv = tmp_path / "contacts.csv", tmp_path / "events.csv"
        write_csv(contacts_csv, CONTACT_COLUMNS, people)
        n_events = write_csv(events_csv, EVENT_COLUMNS, events(people, seed=1))
        del people
        print(f"generated {args.contacts:,} contacts and {n_events:,} events in {time.perf_counter() - t:.1f} s")
        await run("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}", None, contacts_csv, events_csv, args.contacts)
        if pg_url:
            schema = f"topslot_bench_{uuid.uuid4().hex[:8]}"
            admin = open_engine(pg_url)
            async with admin.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))  # generated name
            try:
                await run("postgresql", pg_url, schema, contacts_csv, events_csv, args.contacts)
            finally:
                async with admin.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
