"""The ledger under faults: SIGKILL the daemon at each step of a delivery, restart it, check the ledger.

1,250 contacts (five chunks at the test's rate), one email slot, a real SMTP server over TCP in
this process, ``topslot run`` as a child process on a simulated clock. The first run dies by
SIGKILL at one step (a failpoint in the daemon, or this test's kill while one message's body is on
the wire); the second run (same node id, no failpoint, still within the slot's grace) recovers and
finishes. Then:

- every row is terminal, and every send attempt was the only one (attempts == 1);
- no delivery reached the server twice; every ``sent`` row reached it; the server got nothing the
  ledger does not account for;
- rows never handed over (``claimed`` at the kill) were sent after the restart, exactly once;
- the ``unknown`` rows are only rows that were ``sending`` when the daemon died and that its
  hand-over journal shows on the wire (handed over, no answer on record): at most one per open SMTP
  connection. The other ``sending`` rows were settled from the journal: accepted ones recorded
  ``sent``, ones that provably never left planned again and sent once after the restart. A kill
  before anything is on the wire (after the claim, after rendering the first chunk) leaves none; a
  kill while a body is on the wire (during DATA) leaves that one.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatch.crash_support import (
    NODE_ID,
    NON_TERMINAL,
    CrashSmtpServer,
    by_state,
    counts,
    import_contacts,
    ledger,
    log_events,
    sim_time,
    tail,
    topslot,
    wait_until,
    write_setup,
)
from topslot.dispatch.claims import CLAIM_BATCH
from topslot.dispatch.dispatcher import IN_FLIGHT, chunk_rows

pytestmark = pytest.mark.slow

DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)
RATE = 500  # messages/s: the bucket takes ~2.5 s, so kills land mid-bucket
CHUNK = chunk_rows(RATE)  # rows per chunk at this rate
CONTACTS = 5 * CHUNK
BIG_INDEX = CONTACTS // 2  # the recipient whose ~7 MB body is on the wire when the "during DATA" kill lands
SMTP_CONNECTIONS = 4  # write_setup's pool_size: at most one message on the wire on each
FIRST_FROM = DUE - timedelta(seconds=63)  # the bucket starts at due − 60 s
RESTART_FROM = DUE + timedelta(minutes=2)  # late, but within the 15-minute grace
DEATH_TIMEOUT_S = 60
FINISH_TIMEOUT_S = 90

# each claim batch (CLAIM_BATCH rows) goes out in chunks of CHUNK rows
CHUNK_SIZES = [
    min(CHUNK, batch - start)
    for first in range(0, CONTACTS, CLAIM_BATCH)
    for batch in [min(CLAIM_BATCH, CONTACTS - first)]
    for start in range(0, batch, CHUNK)
]
MID_BUCKET = 3  # the 3rd chunk: earlier ones are done, later ones are coming
NEXT_WAVE = IN_FLIGHT + 1  # the first chunk that starts only after another one finished
assert len(CHUNK_SIZES) > NEXT_WAVE and len(CHUNK_SIZES) > MID_BUCKET


@dataclass(frozen=True)
class Step:
    name: str
    failpoint: str | None  # None: this test kills the daemon from the SMTP server, mid-body
    on_the_wire: bool  # at the kill, messages may have left: some rows must end unknown
    mid_bucket: bool = False  # some rows were sent before the kill, some were not


STEPS = [
    Step("after_claim", "after_claim:1", on_the_wire=False),  # the first claim batch (CLAIM_BATCH rows)
    Step("after_render", "after_render:1", on_the_wire=False),  # the first chunk, marked sending, none handed over
    Step("after_render_mid_bucket", f"after_render:{NEXT_WAVE}", on_the_wire=False, mid_bucket=True),
    Step("during_data", None, on_the_wire=True, mid_bucket=True),
    Step("after_reply", f"after_reply:{MID_BUCKET}", on_the_wire=True, mid_bucket=True),
    Step("after_commit", f"after_commit:{MID_BUCKET}", on_the_wire=False, mid_bucket=True),
]


@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
async def test_sigkill_at_each_step_then_restart_sends_everybody_once(tmp_path: Path, step: Step) -> None:
    current: dict[str, int] = {}  # the running daemon's pid, for the mid-body kill

    def on_body(delivery_id: int, rcpt: str) -> None:
        if step.failpoint is None and rcpt == setup.big_email and "killed" not in current and "pid" in current:
            os.kill(current["pid"], signal.SIGKILL)
            current["killed"] = delivery_id

    # a small SO_RCVBUF: the server cannot swallow the big body before the kill lands
    async with CrashSmtpServer(on_body=on_body, receive_buffer=4096) as server:
        setup = write_setup(tmp_path, server.port, DUE, contacts=CONTACTS, big_index=BIG_INDEX, rate=RATE)
        await import_contacts(setup, tmp_path / "import.log")

        # ---- first run: dies by SIGKILL at the step
        first_log = tmp_path / "run1.log"
        env = {"TOPSLOT_NODE_ID": NODE_ID} | ({"TOPSLOT_FAILPOINT": step.failpoint} if step.failpoint else {})
        started = time.monotonic()
        proc = await topslot(setup, "run", "--from", sim_time(FIRST_FROM), log=first_log, **env)
        current["pid"] = proc.pid
        if not await wait_until(lambda: proc.returncode is not None, DEATH_TIMEOUT_S):
            proc.kill()
            await proc.wait()
            pytest.fail(f"the daemon did not die at {step.name}: {counts(ledger(setup.db))}\n{tail(first_log)}")
        assert await proc.wait() == -signal.SIGKILL, tail(first_log)
        first_s = time.monotonic() - started
        assert await wait_until(lambda: server.open_now == 0, 10)  # the server has read what reached it
        at_death = ledger(setup.db)
        states_at_death = by_state(at_death)
        sending_at_death = states_at_death.get("sending", set())
        received_at_death = server.received_ids()

        # ---- second run: same node, no failpoint, within the slot's grace; recovers and finishes
        second_log = tmp_path / "run2.log"
        started = time.monotonic()
        proc = await topslot(setup, "run", "--from", sim_time(RESTART_FROM), log=second_log, TOPSLOT_NODE_ID=NODE_ID)
        current["pid"] = proc.pid

        def finished() -> bool:
            rows = ledger(setup.db)
            return (
                len(rows) == CONTACTS
                and not any(r.state in NON_TERMINAL for r in rows.values())
                and bool(log_events(second_log, "daemon_ready"))
            )

        await wait_until(lambda: proc.returncode is not None or finished(), FINISH_TIMEOUT_S)
        second_s = time.monotonic() - started
        assert proc.returncode is None, f"the restarted daemon stopped on its own\n{tail(second_log)}"
        proc.send_signal(signal.SIGTERM)
        code = await proc.wait()
        assert finished(), f"rows left unfinished: {counts(ledger(setup.db))}\n{tail(second_log)}"
        assert code == 0, tail(second_log)
        final = ledger(setup.db)
        received = server.received_ids()

    print(
        f"\n{step.name}: died after {first_s:.1f} s with {counts(at_death)}; "
        f"restart finished in {second_s:.1f} s with {counts(final)}; server got {sum(received.values())} messages"
    )
    states = by_state(final)
    sent, unknown = states.get("sent", set()), states.get("unknown", set())

    # every row terminal; every recipient accepts, so nothing may fail
    assert len(final) == CONTACTS
    assert set(states) <= {"sent", "unknown"}, counts(final)
    # nobody got the same delivery twice, and nobody was handed to the server twice
    assert {d: n for d, n in received.items() if n > 1} == {}
    assert max(Counter(r.rcpt_to[0] for r in server.received).values()) == 1  # one message per address
    assert {r.attempts for r in final.values()} == {1}
    # the server's mailbox and the ledger agree: sent ⇒ received; received ⇒ sent or unknown
    assert sent <= set(received), sorted(sent - set(received))[:10]
    assert set(received) <= sent | unknown, sorted(set(received) - sent - unknown)[:10]
    # what was settled before the kill stayed settled; coupons went with every handed-over message
    assert states_at_death.get("sent", set()) <= sent
    assert all(final[d].coupon_code for d in sent | unknown)
    # the ambiguous window: of the rows the dead daemon had marked sending, only those on the wire
    assert unknown <= sending_at_death
    assert len(unknown) <= SMTP_CONNECTIONS, (len(unknown), len(sending_at_death))
    recovered = log_events(second_log, "leases_recovered")
    claimed_at_death = len(states_at_death.get("claimed", set()))
    if claimed_at_death or sending_at_death:
        settled = recovered[0]
        assert recovered and settled["claimed_to_planned"] == claimed_at_death
        assert settled["sending_to_unknown"] == len(unknown)
        by_journal = settled.get("sending_to_planned", 0) + settled.get("sending_to_sent", 0)
        assert settled["sending_to_unknown"] + by_journal == len(sending_at_death)

    # rows never handed over were sent after the restart
    assert states_at_death.get("claimed", set()) | states_at_death.get("planned", set()) <= sent

    if step.name in ("after_claim", "after_render"):  # nothing on the wire yet: all sent exactly once
        assert not unknown, counts(at_death)
        assert sent == set(final) and set(received) == sent
    if step.name == "after_claim":
        assert not sending_at_death, counts(at_death)
    if step.name == "after_render":  # marked sending while it rendered: the journal shows none of it left
        assert sending_at_death and recovered[0].get("sending_to_planned") == len(sending_at_death), recovered
    if step.on_the_wire:
        assert sending_at_death, f"the kill at {step.name} did not land while sending: {counts(at_death)}"
    if step.mid_bucket:
        assert 0 < len(states_at_death.get("sent", set())) < CONTACTS, counts(at_death)
    if step.name == "after_reply":
        # the failpoint's chunk had all its replies (every one a 250), yet its rows are only `unknown`
        assert len(sending_at_death & set(received_at_death)) >= CHUNK_SIZES[MID_BUCKET - 1]
    if step.name == "during_data":
        big = next(r.id for r in final.values() if r.email == setup.big_email)
        assert current.get("killed") == big
        assert big in server.cut_short and big not in received  # the connection dropped mid-body
        assert final[big].state == "unknown"


async def test_sigterm_mid_bucket_finishes_what_is_on_the_wire_and_leaves_no_unknown(tmp_path: Path) -> None:
    """A graceful stop is not a crash: chunks on the wire finish and are recorded, the rest goes back
    to planned, and the restart sends it — nobody is left `unknown`."""
    current: dict[str, int] = {}

    def on_body(delivery_id: int, rcpt: str) -> None:
        if len(server.received) >= CHUNK // 2 and "termed" not in current and "pid" in current:
            os.kill(current["pid"], signal.SIGTERM)
            current["termed"] = delivery_id

    async with CrashSmtpServer(on_body=on_body) as server:
        setup = write_setup(tmp_path, server.port, DUE, contacts=CONTACTS, big_index=BIG_INDEX, rate=RATE)
        await import_contacts(setup, tmp_path / "import.log")
        first_log = tmp_path / "run1.log"
        proc = await topslot(setup, "run", "--from", sim_time(FIRST_FROM), log=first_log, TOPSLOT_NODE_ID=NODE_ID)
        current["pid"] = proc.pid
        assert await wait_until(lambda: proc.returncode is not None, DEATH_TIMEOUT_S), tail(first_log)
        assert await proc.wait() == 0, tail(first_log)
        at_stop = by_state(ledger(setup.db))
        assert "termed" in current
        assert not at_stop.get("sending") and not at_stop.get("claimed"), counts(ledger(setup.db))
        assert 0 < len(at_stop.get("sent", set())) < CONTACTS

        second_log = tmp_path / "run2.log"
        proc = await topslot(setup, "run", "--from", sim_time(RESTART_FROM), log=second_log, TOPSLOT_NODE_ID=NODE_ID)

        def finished() -> bool:
            rows = ledger(setup.db)
            return len(rows) == CONTACTS and not any(r.state in NON_TERMINAL for r in rows.values())

        await wait_until(finished, FINISH_TIMEOUT_S)
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0, tail(second_log)
        final = ledger(setup.db)
        received = server.received_ids()
    assert counts(final) == {"sent": CONTACTS}, counts(final)
    assert set(received) == set(final) and max(received.values()) == 1
