"""Three real ``topslot run`` nodes on one PostgreSQL database, one real SMTP server (issue 17):
every delivery accepted exactly once; a node SIGKILLed mid-burst has its rows finished by the others
within seconds of the heartbeat timeout, with no duplicate; a node SIGSTOPped past its heartbeat
timeout is fenced (after SIGCONT it sends nothing of the rows taken from it, and exits to be
started afresh). Harness: ``nodes_support``."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from dispatch.nodes_support import Cluster, cluster

pytestmark = pytest.mark.postgres

DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)
TIMEOUT = 4  # node_timeout_s of these tests (seconds)


def assert_each_sent_once(nodes: Cluster, rows: dict[int, tuple[str, str | None]]) -> Counter[int]:
    """No delivery reached the SMTP server twice; every ``sent`` row reached it; nothing else did
    but rows left ``unknown`` (on the wire when their node died)."""
    received = nodes.server.received_ids()
    assert not [d for d, n in received.items() if n > 1], "a delivery reached the server twice"
    sent = {d for d, (state, _) in rows.items() if state == "sent"}
    unknown = {d for d, (state, _) in rows.items() if state == "unknown"}
    assert sent <= set(received)
    assert set(received) <= sent | unknown
    return received


async def test_three_nodes_send_30000_deliveries_each_exactly_once(tmp_path, pg_test_url) -> None:
    n = 30_000
    async with cluster(tmp_path, pg_test_url, DUE, contacts=n, rate=20_000) as nodes:
        for k in range(3):
            await nodes.start(k, lead_in=25.0)  # each plans 30,000 rows at its start
        started = time.monotonic()
        states = await nodes.until_settled(timeout=300)
        took = time.monotonic() - started
        rows = await nodes.rows()
        for k in range(3):
            assert await nodes.stop(k) == 0
    assert states == {"sent": n}
    received = assert_each_sent_once(nodes, rows)
    assert len(received) == n
    split = Counter(node for _, node in rows.values())
    print(f"\n30,000 deliveries on 3 nodes: settled {took:.1f} s after the last start; split {dict(split)}")
    assert set(split) == {"node0", "node1", "node2"}  # every node sent a real share


async def test_a_node_killed_mid_burst_has_its_rows_finished_by_the_others_in_seconds(tmp_path, pg_test_url) -> None:
    n = 6_000
    async with cluster(
        tmp_path, pg_test_url, DUE, contacts=n, rate=600, accept_delay=0.002, TOPSLOT_NODE_TIMEOUT_S=str(TIMEOUT)
    ) as nodes:
        for k in range(3):
            await nodes.start(k, lead_in=12.0)
        await nodes.wait_event(0, "bucket_started", timeout=60)
        while (await nodes.rows_of("node0"))["sent"] < 200:  # node0 is sending its share
            await asyncio.sleep(0.05)
        nodes.signal(0, signal.SIGKILL)
        killed = time.monotonic()
        at_kill = await nodes.rows_of("node0")
        found = await nodes.first_event_among([1, 2], "node_dead", timeout=TIMEOUT * 5)
        found_after = time.monotonic() - killed
        states = await nodes.until_settled(timeout=120)
        settled_after = time.monotonic() - killed
        # node0 starts again (as systemd would): its journal proves which of its unknown rows never left
        await nodes.start(0)
        settled = await nodes.wait_event(0, "leases_recovered", timeout=60)
        final = await nodes.until_settled(timeout=120)
        rows = await nodes.rows()
        for k in (0, 1, 2):
            assert await nodes.stop(k) == 0
    assert found["owner"].startswith("node0/") and found["silent_s"] >= TIMEOUT
    assert found["claimed_to_planned"] > 0  # node0 held claimed rows: the others sent them
    assert found_after < TIMEOUT * 3  # seconds, not the 15-minute lease
    assert set(states) <= {"sent", "unknown"}
    # only rows node0 had marked sending (its journal, which could say which of them really left, is
    # on its own disk: out of the others' reach) ...
    assert states["unknown"] <= at_kill["sending"]
    # ... until node0 itself starts again: then only those really on the wire (one per connection) stay
    assert settled["unknown_to_planned"] + settled["unknown_to_sent"] >= states["unknown"] - 4
    assert set(final) <= {"sent", "unknown"} and final["unknown"] <= 4
    assert_each_sent_once(nodes, rows)
    print(
        f"\nSIGKILL: node_dead {found_after:.1f} s after the kill (timeout {TIMEOUT} s), every row settled "
        f"{settled_after:.1f} s after it; at the kill node0 held {dict(at_kill)}; then {dict(states)}; "
        f"node0 restarted: {settled}; final {dict(final)}"
    )


async def test_a_node_stopped_past_its_timeout_is_fenced_and_sends_nothing_after_sigcont(tmp_path, pg_test_url) -> None:
    n = 4_000
    async with cluster(
        tmp_path, pg_test_url, DUE, contacts=n, rate=400, accept_delay=0.002, TOPSLOT_NODE_TIMEOUT_S=str(TIMEOUT)
    ) as nodes:
        for k in range(2):
            await nodes.start(k, lead_in=12.0)
        await nodes.wait_event(0, "bucket_started", timeout=60)
        while (await nodes.rows_of("node0"))["sent"] < 100:
            await asyncio.sleep(0.05)
        nodes.signal(0, signal.SIGSTOP)
        held = await nodes.rows_of("node0")
        received_at_stop = nodes.server.received_ids()
        found = await nodes.first_event_among([1], "node_dead", timeout=TIMEOUT * 5)
        await nodes.until_settled(timeout=120)  # node1 finished node0's rows meanwhile
        taken = await nodes.rows()
        nodes.signal(0, signal.SIGCONT)
        code = await asyncio.wait_for(nodes.nodes[0].proc.wait(), 60)  # found dead: it stops on its own
        fenced = nodes.nodes[0].events("node_declared_dead")
        states = await nodes.states()
        rows = await nodes.rows()
        assert await nodes.stop(1) == 0
    assert found["owner"].startswith("node0/") and found["claimed_to_planned"] > 0
    assert code == 1 and fenced  # exit 1: systemd starts it afresh under a new identity
    # after SIGCONT node0 handed nothing over: what the server got from it came before the stop, and
    # its late writes changed no row (the ledger is as node1 left it)
    received = assert_each_sent_once(nodes, rows)
    late = set(received) - set(received_at_stop) - {d for d, (s, node) in taken.items() if node == "node1"}
    assert late <= {d for d, (s, _) in taken.items() if s == "unknown"}, "node0 sent after it was found dead"
    assert rows == taken
    assert set(states) <= {"sent", "unknown"}
    print(f"\nSIGSTOP: node0 held {dict(held)} when stopped; node_dead after {found['silent_s']} s silent; "
          f"after SIGCONT it exited {code}; final {dict(states)}")  # fmt: skip
