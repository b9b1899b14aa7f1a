"""One sending process of the shared-limits tests and bench: an ``SmtpPool`` whose rate and
per-domain limits are held in PostgreSQL or Redis (``SharedLimits``), sending ``count`` messages to
one SMTP server as fast as its limits let it, starting at the wall-clock instant ``start_at`` (so
that every process starts together).

``python limits_worker.py '<json>'`` with keys: port, store ("postgresql" | "redis"), url, schema
(PostgreSQL) or prefix (Redis), holder, count, rate, max_per_domain, pool_size, domains, start_at.
Prints one JSON line: {"sent": n, "failed": n, "round_trips": n, "errors": [the first three],
"calls": {store method: calls}}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

from topslot.channels.base import EmailEnvelope
from topslot.channels.limits import SharedLimits
from topslot.channels.shared_limits import LimitStore
from topslot.channels.smtp import SmtpPool
from topslot.errors import SendError
from topslot.settings import SmtpServer

IN_FLIGHT = 50  # messages handed to the pool at once


def counted(method: Any, name: str, calls: Counter[str]) -> Any:
    async def call(*args: Any) -> Any:
        calls[name] += 1
        return await method(*args)

    return call


async def main(job: dict[str, Any]) -> dict[str, Any]:
    store: LimitStore
    engine = None
    if job["store"] == "postgresql":
        from topslot.store.db import open_engine
        from topslot.store.limits import PostgresLimitStore

        engine = open_engine(job["url"], schema=job["schema"])
        store = PostgresLimitStore(engine)
    else:
        from topslot.channels.redis_limits import RedisLimitStore

        store = RedisLimitStore(job["url"], job["prefix"])
    calls: Counter[str] = Counter()
    for method in ("take", "give_back", "grab", "free", "renew"):
        setattr(store, method, counted(getattr(store, method), method, calls))
    limits = SharedLimits(store, job["holder"])
    server = SmtpServer(
        host="127.0.0.1", port=job["port"], tls="none", pool_size=job["pool_size"],
        rate_per_second=job["rate"], max_per_domain=job["max_per_domain"],
    )  # fmt: skip
    pool = SmtpPool({"test": server}, limits=limits)
    domains = job["domains"]
    gate = asyncio.Semaphore(IN_FLIGHT)
    sent = failed = 0
    errors: list[str] = []

    async def one(i: int) -> None:
        nonlocal sent, failed
        rcpt = f"accept+{job['holder']}-{i}@{domains[i % len(domains)]}"
        async with gate:
            try:
                await pool.send(EmailEnvelope(i, "news@shop.example", rcpt, b"Subject: hi\r\n\r\nhello\r\n"))
                sent += 1
            except SendError as exc:
                failed += 1
                errors.append(str(exc))

    await asyncio.sleep(max(0.0, job["start_at"] - time.time()))
    await asyncio.gather(*(one(i) for i in range(job["count"])))
    await pool.close()
    round_trips = store.round_trips
    await limits.close()
    if engine is not None:
        await engine.dispose()
    return {"sent": sent, "failed": failed, "round_trips": round_trips, "errors": errors[:3], "calls": dict(calls)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
