"""The headline of shared limits: three separate processes, each with its own ``SmtpPool`` and its
own connection to PostgreSQL or Redis (``limits_worker.py``), send to one real SMTP server. Together
they keep to one server's ``rate_per_second`` (measured at the server, within 5 %) and never hold
more than ``max_per_domain`` transactions to one domain at once (counted by the server).

This goes through the messenger/limiter seam (``SmtpPool`` + ``SharedLimits``), not through whole
``topslot run`` nodes: the dispatcher adds nothing to how a limit is kept.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from topslot.store.db import open_engine
from topslot.store.schema import limit_slots, rate_buckets

from .scripted_smtp import ScriptedSmtpServer
from .support import run_workers

WORKER = Path(__file__).with_name("limits_worker.py")
PROCESSES = 3


@pytest.fixture(
    params=[pytest.param("postgresql", marks=pytest.mark.postgres), pytest.param("redis", marks=pytest.mark.redis)]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Where the three processes keep the limits: a migrated PostgreSQL schema, or a Redis prefix."""
    if request.param == "redis":
        yield {"store": "redis", "url": request.getfixturevalue("redis_test_url"),
               "prefix": request.getfixturevalue("redis_prefix")}  # fmt: skip
        return
    url, schema = request.getfixturevalue("pg_migrated_schema")
    engine = open_engine(url, schema=schema)
    async with engine.begin() as conn:  # what an earlier test left
        await conn.execute(delete(rate_buckets))
        await conn.execute(delete(limit_slots))
    await engine.dispose()
    yield {"store": "postgresql", "url": url, "schema": schema}


async def run_processes(store: dict[str, Any], port: int, **job: Any) -> list[dict[str, Any]]:
    """Start PROCESSES workers together (each starts sending at the same instant); their reports."""
    start_at = time.time() + 3.0  # time for every interpreter to start and connect
    jobs = [
        {**store, **job, "port": port, "holder": f"p{k}-{uuid.uuid4().hex[:6]}", "start_at": start_at}
        for k in range(PROCESSES)
    ]
    return await run_workers(WORKER, jobs, timeout=120)


async def test_three_processes_together_keep_one_rate(store: dict[str, Any]) -> None:
    rate, each = 50.0, 150  # 450 messages: about 9 s at 50/s (150/s if each process kept its own)
    async with ScriptedSmtpServer() as server:
        reports = await run_processes(
            store, server.port, count=each, rate=rate, max_per_domain=100, pool_size=4, domains=["a.example"]
        )
        times = sorted(r.at for r in server.accepted())

    assert [r["sent"] for r in reports] == [each] * PROCESSES
    assert len(times) == each * PROCESSES
    measured = (len(times) - 1) / (times[-1] - times[0])
    print(f"{store['store']}: {measured:.2f}/s for a limit of {rate}/s; calls {[r['calls'] for r in reports]}")
    assert abs(measured - rate) / rate < 0.05
    trips = sum(r["round_trips"] for r in reports)
    assert trips < len(times)  # tokens come in batches: fewer round trips than messages


async def test_three_processes_never_pass_the_per_domain_limit(store: dict[str, Any]) -> None:
    limit, each = 2, 60
    domains = ["a.example", "b.example"]
    async with ScriptedSmtpServer(accept_delay=0.03) as server:  # transactions overlap
        reports = await run_processes(
            store, server.port, count=each, rate=2000.0, max_per_domain=limit, pool_size=4, domains=domains
        )
        most = dict(server.most_in_flight)
        accepted = len(server.accepted())

    assert [r["sent"] for r in reports] == [each] * PROCESSES and accepted == each * PROCESSES
    print(f"{store['store']}: most transactions at once per domain {most}")
    assert set(most) == set(domains)
    assert max(most.values()) <= limit  # 12 connections in 3 processes, never more than 2 to a domain
    assert limit in most.values()  # and the limit was reached: the processes did contend
