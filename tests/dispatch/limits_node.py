"""One node of the shared-limits dispatch test: the real ``DispatchService`` and ``BucketScheduler``
on a PostgreSQL schema (so their limits are shared in it), firing the planned bucket of
``dispatch.fixtures.campaign()`` at the wall-clock instant ``start_at``, claiming ``claim_batch``
rows at a time (so that the nodes share the bucket).

``python limits_node.py '<json>'`` with keys: url, schema, port, rate, max_per_domain, node, var,
start_at, claim_batch. Prints one JSON line: {"claimed": n}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: dispatch.fixtures

from dispatch.fixtures import DUE, campaign, settings  # noqa: E402
from topslot.clock import FakeClock  # noqa: E402
from topslot.dispatch import claims  # noqa: E402
from topslot.dispatch.service import DispatchService  # noqa: E402
from topslot.logs import configure_logging  # noqa: E402
from topslot.scheduling.scheduler import BucketScheduler  # noqa: E402
from topslot.store.db import open_engine  # noqa: E402


async def main(job: dict[str, Any]) -> dict[str, Any]:
    claims.CLAIM_BATCH = job["claim_batch"]
    engine = open_engine(job["url"], schema=job["schema"])
    server = {"host": "127.0.0.1", "port": job["port"], "tls": "none", "pool_size": 4,
              "rate_per_second": job["rate"], "max_per_domain": job["max_per_domain"]}  # fmt: skip
    s = settings(Path(job["var"]), None, smtp={"local": server})
    c = campaign()
    clock = FakeClock(DUE - timedelta(minutes=1))
    service = DispatchService(engine, s, clock, node=job["node"])
    scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
    await service.on_campaigns_changed({c.id: c})
    scheduler.campaigns = {c.id: c}  # planned by the test already
    await asyncio.sleep(max(0.0, job["start_at"] - time.time()))
    claimed = await scheduler.fire_bucket(c.id, "email", DUE)
    await service.close()
    await engine.dispose()
    return {"claimed": claimed, "shared": service.messengers.limits.shared}  # type: ignore[attr-defined]


if __name__ == "__main__":
    configure_logging("warning", "console", stream=sys.stderr)
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
