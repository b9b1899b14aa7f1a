"""Benchmark: one, two and three ``topslot run`` nodes on one PostgreSQL database sending one
bucket to Postfix's smtp-sink, side by side in one run (issue 17: adding a node must never lower
the throughput, nor send anything twice).

Each send run: a fresh database copied from a template (migrated by ``topslot db upgrade``, N
contacts imported by ``topslot contacts import``, once), a fresh smtp-sink (C) that appends every
message it accepts to a dump file, and K real ``topslot run`` processes started one after the other
by ``tests/dispatch/nodes_support.py`` (each plans the campaign as it starts; the bucket fires once
all are ready, on every node at once: the crash tests' small email campaign, all recipients in one
domain, no rate limit, ``pool_size`` 8 per node). Measured, from the nodes' JSON logs (wall-clock
stamps): msg/s = N / (last ``chunk_sent`` - first ``bucket_started``). Checked: every ledger row
``sent``, and the sink's dump holds N messages, one per delivery (its Message-ID) and one per
recipient (duplicates: must be 0). Node counts alternate their order over ``--repeat`` rounds;
medians, and the ratio of each to one node.

Then the claim rate: C processes (1, 2, 3) claim a planned bucket of N rows side by side with the
daemon's own claim (``topslot.store.ledger.claim_batch``: batches of 1,000, ``FOR UPDATE SKIP
LOCKED``), sending nothing: rows claimed per second of claiming (N / first claim's start to last
claim's end), each row claimed once.

    .venv/bin/python bench/nodes.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/nodes.py --pg ... --messages 5000 --repeat 1         # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from dispatch.crash_support import CAMPAIGN_ID, write_setup  # noqa: E402
from dispatch.nodes_support import DUE, Cluster, cluster, pg_database  # noqa: E402
from smtp_transport import ensure_postfix_tools, free_port, start_sink  # noqa: E402
from sqlalchemy import text, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from topslot.delivery import DeliveryState as S  # noqa: E402
from topslot.store import ledger  # noqa: E402
from topslot.store.db import open_engine  # noqa: E402
from topslot.store.schema import deliveries  # noqa: E402

UNLIMITED = 1_000_000  # rate_per_second: never binds
NODE_ENV = {  # every node: a pool of 8 connections, the one receiving domain never the limit
    "TOPSLOT_SMTP__LOCAL__POOL_SIZE": "8",
    "TOPSLOT_SMTP__LOCAL__MAX_PER_DOMAIN": "100",
}
COUNTS = (1, 2, 3)  # nodes per run, claimers per claim round
READY_S = 12.0  # seconds a node may take to start and plan N rows at first (then: 1.5 x the most seen)
_RCPT = re.compile(rb"^X-Rcpt-Args: <([^>]*)>", re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^Message-ID: <d(\d+)\.", re.MULTILINE | re.IGNORECASE)

Result = dict[str, Any]


# ---------------------------------------------------------------- one send run


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


async def send_run(work: Path, pg: str, template: str, sink: str, n: int, k: int, ready_s: float) -> Result:
    """K nodes send the bucket of N to a fresh smtp-sink (the bucket fires ``ready_s`` per node
    after the first start); their msg/s, split, start-up times and the checks."""
    dump_dir = work / "sink"
    dump_dir.mkdir(parents=True)
    dump_dir.chmod(0o777)  # smtp-sink writes as nobody when run as root
    dump = dump_dir / "messages"
    port = free_port()
    sink_process = start_sink(sink, port, "-D", str(dump))
    try:
        async with cluster(
            work, pg, contacts=n, rate=UNLIMITED, smtp_port=port, template=template, **NODE_ENV
        ) as nodes:
            slack = await nodes.start_all(k, lead_in=ready_s * k + 2)
            ready = [node.ready_s or 0.0 for node in nodes.nodes.values()]
            states = await nodes.until_settled(timeout=max(300.0, n / 50))
            started = min(stamp(e) for node in nodes.nodes.values() for e in node.events("bucket_started"))
            ended = max(stamp(e) for node in nodes.nodes.values() for e in node.events("chunk_sent"))
            split = Counter(node for _, node in (await nodes.rows()).values())
            codes = [await nodes.stop(j) for j in range(k)]
    finally:
        sink_process.terminate()
        sink_process.wait(timeout=10)
    data = dump.read_bytes() if dump.exists() else b""
    per_recipient = Counter(_RCPT.findall(data))
    per_delivery = Counter(_MESSAGE_ID.findall(data))
    problems = []
    if states != {S.SENT: n}:
        problems.append(f"ledger {dict(states)}")
    if codes != [0] * k:
        problems.append(f"exit codes {codes}")
    if sum(per_delivery.values()) != n or len(per_delivery) != n or len(per_recipient) != n:
        problems.append(
            f"the sink holds {sum(per_delivery.values()):,} messages for {len(per_delivery):,} deliveries "
            f"and {len(per_recipient):,} recipients"
        )
    return {
        "msg_per_s": n / (ended - started),
        "seconds": ended - started,
        "slack": slack,
        "ready_s": max(ready),
        "split": [split[f"node{j}"] for j in range(k)],
        "duplicates": sum(c - 1 for c in per_delivery.values() if c > 1),
        "problems": problems,
    }


# ---------------------------------------------------------------- the claim rate


async def claimer(spec: dict[str, Any]) -> dict[str, Any]:
    """A claiming process: from ``start_at`` (wall clock), claim the bucket batch by batch as
    ``owner`` until nothing is left; rows, claim statements (the last one finds nothing), first start
    and last end, seconds in claim statements."""
    engine = open_engine(spec["url"])
    due = datetime.fromisoformat(spec["due"])
    try:
        async with engine.connect():  # connected before the start, as a node is
            pass
        await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
        rows, statements, busy, last_id = 0, 0, 0.0, 0
        first = time.time()
        while True:
            began = time.perf_counter()
            batch = await ledger.claim_batch(
                engine, CAMPAIGN_ID, "email", due, owner=spec["owner"], lease=timedelta(minutes=15),
                now=due - timedelta(seconds=30), limit=1000, after_id=last_id,
            )  # fmt: skip
            busy, statements = busy + time.perf_counter() - began, statements + 1
            if not batch.claimed:
                break
            rows, last_id = rows + len(batch.claimed), batch.last_id
        return {"rows": rows, "statements": statements, "first": first, "last": time.time(), "busy": busy}
    finally:
        await engine.dispose()


async def claim_round(nodes: Cluster, n: int, c: int) -> dict[str, Any]:
    """C claimer processes on the bucket, every row planned again first; the rows claimed per second."""
    assert nodes.engine is not None
    async with nodes.engine.begin() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.campaign_id == CAMPAIGN_ID)
            .values(state=S.PLANNED, lease_owner=None, lease_expires_utc=None)
        )  # fmt: skip
    async with nodes.engine.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text("VACUUM ANALYZE deliveries"))
    start_at = time.time() + 3.0  # every interpreter started and connected
    specs = [
        {"url": nodes.url, "owner": f"claimer{j}/bench", "due": DUE.isoformat(), "start_at": start_at} for j in range(c)
    ]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--claimer", json.dumps(spec), stdout=asyncio.subprocess.PIPE
        )
        for spec in specs
    ]
    results = []
    for proc in procs:
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"a claimer failed ({proc.returncode})")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    states = await nodes.states()
    claimed = sum(r["rows"] for r in results)
    if claimed != n or states != {S.CLAIMED: n}:
        sys.exit(f"claimers: {claimed:,} rows claimed of {n:,}; ledger {dict(states)}")
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    statements = sum(r["statements"] for r in results)
    return {"rows_per_s": n / span, "ms_per_claim": 1000 * sum(r["busy"] for r in results) / statements}


# ---------------------------------------------------------------- main


async def send_rounds(work: Path, pg: str, template: str, sink: str, n: int, repeat: int) -> dict[int, list[Result]]:
    """``repeat`` rounds of a send run per node count, the counts in alternating order."""
    sends: dict[int, list[Result]] = {k: [] for k in COUNTS}
    ready_seen: list[float] = []  # the longest start-up of each run
    for r in range(repeat):
        for k in COUNTS if r % 2 == 0 else tuple(reversed(COUNTS)):
            ready_s = 1.5 * max(ready_seen) if ready_seen else READY_S
            result = await send_run(work / f"send-{r}-{k}", pg, template, sink, n, k, ready_s)
            sends[k].append(result)
            ready_seen.append(result["ready_s"])
            late = f"; the bucket fired {-result['slack']:.0f} s before all were ready" if result["slack"] < 0 else ""
            print(
                f"  round {r + 1}, {k} node(s): {result['msg_per_s']:>6,.0f} msg/s "
                f"({result['seconds']:.1f} s), split {result['split']}, duplicates {result['duplicates']}{late}",
                flush=True,
            )
            if result["problems"]:
                sys.exit(f"  {k} node(s): {'; '.join(result['problems'])}")
    return sends


async def claim_rounds(work: Path, pg: str, template: str, n: int, repeat: int) -> dict[int, list[Result]]:
    """The bucket planned by one node (an hour ahead, then stopped), claimed ``repeat`` times per
    claimer count, the counts in alternating order."""
    claims: dict[int, list[Result]] = {c: [] for c in COUNTS}
    async with cluster(work, pg, contacts=n, rate=UNLIMITED, smtp_port=25, template=template) as nodes:
        await nodes.start(0, lead_in=3600)
        await nodes.stop(0)
        for r in range(repeat):
            for c in COUNTS if r % 2 == 0 else tuple(reversed(COUNTS)):
                result = await claim_round(nodes, n, c)
                claims[c].append(result)
                print(
                    f"  round {r + 1}, {c} claimer(s): {result['rows_per_s']:>7,.0f} rows/s, "
                    f"{result['ms_per_claim']:.0f} ms per claim statement",
                    flush=True,
                )
    return claims


def summary(sends: dict[int, list[Result]], claims: dict[int, list[Result]]) -> None:
    repeat = len(sends[1])
    one = statistics.median(v["msg_per_s"] for v in sends[1])
    print(f"\nsummary (medians of {repeat})")
    print(f"  {'nodes':<9} {'msg/s':>7} {'x 1':>6} {'duplicates':>11}   runs")
    for k in COUNTS:
        values = [v["msg_per_s"] for v in sends[k]]
        median = statistics.median(values)
        duplicates = sum(v["duplicates"] for v in sends[k])
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"  {k:<9} {median:>7,.0f} {median / one:>6.2f} {duplicates:>11}   {runs}")
    one_claim = statistics.median(v["rows_per_s"] for v in claims[1])
    print(f"  {'claimers':<9} {'rows/s':>7} {'x 1':>6} {'ms/claim':>11}   (claiming only, batches of 1,000)")
    for c in COUNTS:
        median = statistics.median(v["rows_per_s"] for v in claims[c])
        ms = statistics.median(v["ms_per_claim"] for v in claims[c])
        print(f"  {c:<9} {median:>7,.0f} {median / one_claim:>6.2f} {ms:>11.0f}")
    worst = min(statistics.median(v["msg_per_s"] for v in sends[k]) for k in COUNTS[1:])
    twice = sum(v["duplicates"] for runs in sends.values() for v in runs)
    verdict = "PASS" if worst >= one * 0.95 and twice == 0 else "FAIL"
    print(f"  adding a node never lowers throughput (within 5 %) and nothing is sent twice: {verdict}")


async def run(args: argparse.Namespace) -> None:
    sink, _ = ensure_postfix_tools()
    n = args.messages
    print(
        f"nodes: {n:,} messages per run, PostgreSQL, smtp-sink on 127.0.0.1, {os.cpu_count()} cores, "
        f"{args.repeat} round(s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="topslot-nodes-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # smtp-sink (as nobody) reaches its dump directory through it
        async with pg_database(args.pg) as template_url:
            began = time.perf_counter()
            setup = write_setup(work / "seed", 25, DUE, contacts=n, big_index=-1, rate=UNLIMITED)
            seeding = Cluster(setup, template_url, 25, n)
            await seeding.prepare()  # topslot db upgrade, topslot contacts import
            await seeding.close()
            template = make_url(template_url).database
            assert template is not None
            print(f"  template database: migrated, {n:,} contacts imported in {time.perf_counter() - began:.1f} s")
            sends = await send_rounds(work, args.pg, template, sink, n, args.repeat)
            claims = await claim_rounds(work / "claims", args.pg, template, n, args.repeat)
    summary(sends, claims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pg",
        default=os.environ.get("TOPSLOT_TEST_DATABASE_URL"),
        help="PostgreSQL URL (default: $TOPSLOT_TEST_DATABASE_URL); each run's database is made and dropped there",
    )
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run (default 20,000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds: medians of this many runs (default 3)")
    parser.add_argument("--claimer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.claimer:
        print(json.dumps(asyncio.run(claimer(json.loads(args.claimer)))))
        return
    if not args.pg:
        parser.error("--pg (or TOPSLOT_TEST_DATABASE_URL) is needed: the nodes share one PostgreSQL database")
    if args.messages < 1 or args.repeat < 1:
        parser.error("--messages and --repeat must be ≥ 1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
