"""Real ``topslot run`` nodes on one PostgreSQL database and one real SMTP server (issue 17): three
nodes send one bucket of 30,000 deliveries, each accepted exactly once by the server and each row
``sent``, every node taking a real share; a node stopped (SIGTERM) in mid-bucket leaves what it had
not sent to the others (known to fail today: xfail); the harness (``nodes_support``) leaves no
process and no database behind, even when a test fails with a node stopped by SIGSTOP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections import Counter

import pytest
from sqlalchemy.engine import make_url

from dispatch.nodes_support import cluster, databases

pytestmark = pytest.mark.postgres

N = 30_000
# Nodes start one after the other, each planning the campaign (30,000 rows) before the next: 7-9 s
# each here. The bucket fires this long after the first start; a node not ready by then joins the
# bucket as soon as it is (its share is smaller, nothing else changes).
LEAD_IN = 32.0


async def test_three_nodes_send_30000_deliveries_each_accepted_exactly_once(tmp_path, pg_test_url) -> None:
    began = time.monotonic()
    async with cluster(tmp_path, pg_test_url, contacts=N, rate=100_000) as nodes:
        prepared = time.monotonic() - began
        slack = await nodes.start_all(3, lead_in=LEAD_IN)
        states = await nodes.until_settled(timeout=300)
        sending = time.time() - nodes.bucket_at
        rows = await nodes.rows()
        per_delivery, per_recipient = nodes.accepted_per_delivery(), nodes.accepted_per_recipient()
        claimed = {k: n.events("bucket_claimed") for k, n in nodes.nodes.items()}
        skew = nodes.clock_skew()
        codes = [await nodes.stop(k) for k in range(3)]
    took = time.monotonic() - began

    assert codes == [0, 0, 0]
    assert states == {"sent": N}  # every row sent
    assert not [d for d, n in per_delivery.items() if n > 1], "a delivery accepted twice"
    assert set(per_delivery) == set(rows)  # every row's message accepted, and nothing else
    assert len(per_recipient) == N and set(per_recipient.values()) == {1}  # each recipient got one message
    assert sum(e["claimed"] for events in claimed.values() for e in events) == N  # no row claimed twice
    split = Counter(node for _, node in rows.values())
    print(
        f"\n{N:,} deliveries, 3 nodes: {took:.0f} s in all (database, migration and import {prepared:.0f} s; "
        f"the last node ready {slack:.0f} s before the bucket; sent {sending:.0f} s after it fired); "
        f"split {dict(sorted(split.items()))}; clocks behind the wall clock by {skew} s"
    )
    assert sorted(split) == ["node0", "node1", "node2"] and min(split.values()) > 0  # each a real share


@pytest.mark.xfail(
    strict=True,
    reason="a node stopped gracefully hands its unsent claimed rows back to planned, behind the other nodes' "
    "claim cursor (claims walk the bucket once, by id): nobody claims them until a re-plan (30 min) or a restart",
)
async def test_a_node_stopped_mid_bucket_leaves_its_unsent_rows_to_the_others(tmp_path, pg_test_url) -> None:
    n = 4_000
    async with cluster(tmp_path, pg_test_url, contacts=n, rate=200) as nodes:  # about 20 s of sending
        await nodes.start_all(2, lead_in=20)
        await nodes.wait_event(0, "bucket_started", timeout=60)
        while True:  # node0 holds claimed rows below node1's claim cursor, and the bucket goes on
            rows = await nodes.rows()
            held = [i for i, (state, node) in rows.items() if node == "node0" and state == "claimed"]
            cursor = max((i for i, (_, node) in rows.items() if node == "node1"), default=0)
            if held and min(held) < cursor and any(state == "planned" for state, _ in rows.values()):
                break
            await asyncio.sleep(0.1)
        assert await nodes.stop(0) == 0  # systemctl stop: chunks on the wire finish, the rest goes back
        handed_back = nodes.nodes[0].events("dispatch_stopped")
        states = await nodes.until_settled(timeout=30)  # seconds, not the next re-plan
    assert handed_back and handed_back[0]["handed_back"] > 0
    assert states == {"sent": n}


async def test_the_harness_leaves_no_node_and_no_database_behind(tmp_path, pg_test_url) -> None:
    before = await databases(pg_test_url)
    with pytest.raises(RuntimeError, match="a test failing"):
        async with cluster(tmp_path, pg_test_url, contacts=20, rate=100) as nodes:
            name = make_url(nodes.url).database
            assert name in await databases(pg_test_url)
            await nodes.start(0, lead_in=600)
            await nodes.start(1, ready_timeout=None)  # still loading when the test fails
            nodes.kill(0, signal.SIGSTOP)  # and one stopped: a stopped node ignores SIGTERM until SIGCONT
            procs = [n.proc for n in nodes.nodes.values()]
            port = nodes.smtp_port
            raise RuntimeError("a test failing")
    assert all(p.returncode is not None for p in procs)  # each node ended and was reaped
    for p in procs:
        with pytest.raises(ProcessLookupError):
            os.kill(p.pid, 0)
    assert name not in await databases(pg_test_url) and await databases(pg_test_url) <= before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
