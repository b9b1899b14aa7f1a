"""Three nodes, one rate: three processes, each the real dispatch path (``BucketScheduler`` →
``DispatchService`` → ``SmtpPool``) on one PostgreSQL ledger, claim one bucket side by side and send
it to one real SMTP server. Their server's ``rate_per_second`` holds for the three together (within
5 %, measured at the server) and its ``max_per_domain`` is never passed; every row is sent once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from channels.scripted_smtp import ScriptedSmtpServer
from channels.support import run_workers
from database_support import truncate_all

from dispatch.fixtures import NOW, campaign, import_people, ledger_by_email, settings
from topslot.clock import FakeClock
from topslot.scheduling.scheduler import BucketScheduler
from topslot.store.db import open_engine

pytestmark = pytest.mark.postgres

NODE = Path(__file__).with_name("limits_node.py")
NODES, DOMAINS, PEOPLE = 3, 4, 450
# Each node claims its part in batches and sends a batch before claiming the next: batches of
# different sizes keep the nodes' pauses between batches apart, as nodes are in life (three
# nodes pausing at once would send below the rate, which is no limiter's doing).
CLAIM_BATCHES = (50, 70, 90)


async def run_nodes(
    url: str, schema: str, tmp_path: Path, server: ScriptedSmtpServer, *, rate: float, per_domain: int
) -> list[dict[str, Any]]:
    """Plan the bucket (PEOPLE rows over DOMAINS domains), run NODES node processes on it together."""
    engine = open_engine(url, schema=schema)
    try:
        await truncate_all(engine)  # what other tests left: this test owns the schema's tables
        emails = [f"accept+{i}@d{i % DOMAINS}.example" for i in range(PEOPLE)]
        await import_people(engine, tmp_path, emails)
        planner = BucketScheduler(engine, settings(tmp_path, None), FakeClock(NOW))
        c = campaign()
        await planner.on_campaigns_changed({c.id: c})  # plans the bucket: one planned row each
    finally:
        await engine.dispose()
    start_at = time.time() + 4.0  # every interpreter started and connected
    jobs = [
        {"url": url, "schema": schema, "port": server.port, "rate": rate, "max_per_domain": per_domain,
         "node": f"node{k}", "var": str(tmp_path / f"node{k}"), "start_at": start_at, "claim_batch": CLAIM_BATCHES[k]}
        for k in range(NODES)
    ]  # fmt: skip
    reports = await run_workers(NODE, jobs, timeout=180)
    assert all(r["shared"] for r in reports)  # PostgreSQL: the limits are held in it
    return reports


async def sent_rows(url: str, schema: str) -> Counter[str]:
    engine = open_engine(url, schema=schema)
    try:
        return Counter(r["state"] for r in (await ledger_by_email(engine)).values())
    finally:
        await engine.dispose()


async def test_three_nodes_send_one_bucket_at_one_rate(pg_migrated_schema: tuple[str, str], tmp_path: Path) -> None:
    url, schema = pg_migrated_schema
    rate = 45.0  # 450 messages: about 10 s (3.3 s if each node kept the rate on its own)
    async with ScriptedSmtpServer() as server:
        reports = await run_nodes(url, schema, tmp_path, server, rate=rate, per_domain=100)
        times = sorted(r.at for r in server.accepted())

    claimed = [r["claimed"] for r in reports]
    assert sum(claimed) == PEOPLE and min(claimed) > 0  # every node sent part of the bucket
    assert await sent_rows(url, schema) == {"sent": PEOPLE} and len(times) == PEOPLE  # each once
    measured = (len(times) - 1) / (times[-1] - times[0])
    print(f"three nodes: {measured:.2f}/s for a limit of {rate}/s; claimed {claimed}")
    assert abs(measured - rate) / rate < 0.05


async def test_three_nodes_never_pass_a_domains_limit(pg_migrated_schema: tuple[str, str], tmp_path: Path) -> None:
    url, schema = pg_migrated_schema
    per_domain = 2  # 12 connections in three nodes, never more than 2 transactions to a domain
    async with ScriptedSmtpServer(accept_delay=0.03) as server:  # transactions overlap
        reports = await run_nodes(url, schema, tmp_path, server, rate=2000.0, per_domain=per_domain)
        most = dict(server.most_in_flight)
        accepted = len(server.accepted())

    claimed = [r["claimed"] for r in reports]
    assert sum(claimed) == PEOPLE and await sent_rows(url, schema) == {"sent": PEOPLE} and accepted == PEOPLE
    print(f"three nodes: most transactions at once per domain {most}; claimed {claimed}")
    assert len(most) == DOMAINS and max(most.values()) <= per_domain
    assert per_domain in most.values()  # reached: the nodes did contend
