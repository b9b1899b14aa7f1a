"""Benchmark: what a SIGKILL leaves ``unknown``, with and without the hand-over journal (issue 12, item 4).

Each trial: a 1,000-contact email bucket (SQLite, 4 SMTP connections at 500/s) sent by ``topslot
run`` to a real SMTP server on loopback that records every message (the crash tests' server); the
daemon is SIGKILLed at a random moment while it sends (after 50 to 900 message bodies have started
to arrive), then restarted to finish the bucket. Counted per kill: the rows ``unknown`` after the
restart, and how many of those the server really received. Trials alternate between the journal on
(the default) and off (``TOPSLOT_HANDOVER_JOURNAL=false``: every ``sending`` row becomes unknown),
so both see the same machine. Every trial also checks the promise: nobody got a message twice.

    .venv/bin/python bench/crash_unknowns.py            # 30 kills each way
    .venv/bin/python bench/crash_unknowns.py --kills 5  # quick

Target: at most the open connections per process (4 here) unknown per kill with the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dispatch.crash_support import (  # noqa: E402
    NODE_ID,
    CrashSmtpServer,
    by_state,
    import_contacts,
    ledger,
    run_until_finished,
    sim_time,
    topslot,
    wait_until,
    write_setup,
)

DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)
CONTACTS = 1000
CONNECTIONS = 4  # pool_size in write_setup
RATE = 500
FIRST_FROM = DUE - timedelta(seconds=63)
RESTART_FROM = DUE + timedelta(minutes=2)


async def trial(root: Path, journal: bool, kill_after: int) -> tuple[int, int]:
    """One kill and restart; (unknown rows, of those received by the server)."""
    env = {"TOPSLOT_NODE_ID": NODE_ID} | ({} if journal else {"TOPSLOT_HANDOVER_JOURNAL": "false"})
    current: dict[str, int] = {}

    def on_body(delivery_id: int, rcpt: str) -> None:
        if server.bodies_started >= kill_after and "pid" in current and "killed" not in current:
            os.kill(current["pid"], signal.SIGKILL)
            current["killed"] = delivery_id

    async with CrashSmtpServer(on_body=on_body) as server:
        setup = write_setup(root, server.port, DUE, contacts=CONTACTS, big_index=-1, rate=RATE)
        await import_contacts(setup, root / "import.log", **env)
        proc = await topslot(setup, "run", "--from", sim_time(FIRST_FROM), log=root / "run1.log", **env)
        current["pid"] = proc.pid
        if not await wait_until(lambda: proc.returncode is not None, 60, 0.05):
            proc.kill()
            raise SystemExit("the daemon was not killed: the bucket ended first?")
        await proc.wait()
        await run_until_finished(
            setup, root / "run2.log", current, start=RESTART_FROM, contacts=CONTACTS, timeout=90, stop_timeout=30,
            ledger=lambda: ledger(setup.db), **env,
        )  # fmt: skip
        received = server.received_ids()
    if max(received.values()) > 1:
        raise SystemExit(f"a delivery reached the server twice: {[d for d, n in received.items() if n > 1][:5]}")
    unknown = by_state(ledger(setup.db)).get("unknown", set())
    return len(unknown), len(unknown & set(received))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=30, help="kills each way (default 30)")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="topslot-kills-") as tmp:
        for n in range(args.kills):
            kill_after = rng.randint(50, 900)
            for journal in (False, True):
                root = Path(tmp) / f"{n}-{'on' if journal else 'off'}"
                root.mkdir()
                unknown, got = await trial(root, journal, kill_after)
                results[journal].append((unknown, got))
                print(f"  kill {n + 1:>2} after {kill_after:>3} bodies, journal {'on ' if journal else 'off'}: "
                      f"{unknown:>3} unknown, {got:>3} of them received", flush=True)  # fmt: skip
    print(f"\nSIGKILL × {args.kills} at random moments, {CONTACTS:,} recipients, {CONNECTIONS} SMTP connections")
    for journal in (False, True):
        rows = results[journal]
        unknowns = [u for u, _ in rows]
        total, got = sum(unknowns), sum(g for _, g in rows)
        share = f"{got / total:.0%}" if total else "n/a"
        median = statistics.median(unknowns)
        print(f"  journal {'on ' if journal else 'off'}: unknown per kill max {max(unknowns)}, median {median:g}; "
              f"the server had received {got} of {total} ({share})")  # fmt: skip
    worst = max(u for u, _ in results[True])
    verdict = "met" if worst <= CONNECTIONS else "NOT met"
    print(f"  target: ≤ {CONNECTIONS} unknown per kill with the journal (one per open connection): {worst} → {verdict}")
    print(f"  nobody got a message twice in {2 * args.kills} kills")


if __name__ == "__main__":
    asyncio.run(main())
