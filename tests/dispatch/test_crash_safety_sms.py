"""The ledger under faults, for SMS: SIGKILL the daemon in the middle of an SMS bucket that goes to
Twilio, restart it, check the ledger against what Twilio received.

500 contacts with SMS consent, one slot; the fake Twilio (a real HTTP server in this process, with a
small delay per request so that several are open at once) stands in for Twilio; ``topslot run`` is
a child process on a simulated clock. The first run dies by SIGKILL in mid-bucket: at a failpoint in
the daemon, or killed by this test from inside the fake as the n-th request arrives (requests still
open, others not yet written). The second run (same node id, no failpoint, within the slot's grace)
recovers and finishes. Then:

- every row is terminal; every send attempt was the only one (attempts == 1);
- Twilio got at most one request per number (an SMS cannot be taken back, and Twilio does not
  drop duplicates): nothing was sent twice;
- every ``sent`` row's number reached Twilio, and the row holds the SID Twilio created for it;
  Twilio got nothing the ledger does not account for (``sent`` or ``unknown``);
- the ``unknown`` rows are exactly the rows that were ``sending`` at the kill (handed to the
  messenger, their requests perhaps written, their outcomes not recorded), and none of them got a
  request after the restart;
- rows never handed over (``claimed`` at the kill) were sent after the restart, each exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from channels.fake_twilio import slow

from daemon.dispatch.dispatcher import CHUNK, IN_FLIGHT
from dispatch.crash_support import (
    NODE_ID,
    NON_TERMINAL,
    CrashTwilio,
    by_state,
    counts,
    log_events,
    phone_of,
    sim_time,
    sms_ledger,
    tail,
    topslot,
    twilio_env,
    wait_until,
    write_sms_setup,
)

pytestmark = pytest.mark.slow

DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)
CONTACTS = 500  # 5 chunks: a kill in the 2nd or 3rd leaves some sent, some on the wire, some not handed over
RATE = 250.0  # SMS/s (the messenger's token bucket): the bucket takes ~2 s
MAX_IN_FLIGHT = 8  # requests open at once
DELAY_S = 0.02  # the fake answers each request after this long: several are open at any moment
FIRST_FROM = DUE - timedelta(seconds=63)  # the bucket starts at due − 60 s
RESTART_FROM = DUE + timedelta(minutes=2)  # late, but within the 15-minute grace
KILL_AT_REQUEST = 150  # the "mid_request" step: SIGKILL as the fake reads its 150th request (or a later one)
DEATH_TIMEOUT_S = 30
FINISH_TIMEOUT_S = 30

assert CONTACTS >= (IN_FLIGHT + 2) * CHUNK, "some chunks must still be claimed, not on the wire, at the kill"


@dataclass(frozen=True)
class Step:
    name: str
    failpoint: str | None  # None: the test kills the daemon from the fake at KILL_AT_REQUEST
    replies_unrecorded: int = 0  # at least this many `sending` rows at the kill had their 201 already


STEPS = [
    Step("after_render_mid_bucket", "after_render:3"),  # the 3rd chunk is rendered, not yet marked sending
    Step("mid_request", None),  # requests open at the fake, others not yet written
    Step("after_reply", "after_reply:2", replies_unrecorded=CHUNK),  # a chunk's 201s are in, not recorded
]


def requests_by_number(fake: CrashTwilio, start: int = 0, end: int | None = None) -> Counter[str]:
    return Counter(r.to for r in fake.requests[start:end])


@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
async def test_sigkill_mid_sms_bucket_then_restart_sends_every_number_once(tmp_path: Path, step: Step) -> None:
    current: dict[str, int] = {}  # the running daemon's pid, for the kill from the fake

    def on_request(n: int, to: str) -> None:
        # the first request from KILL_AT_REQUEST on that arrives once a chunk is recorded as sent
        if step.failpoint is not None or n < KILL_AT_REQUEST or "pid" not in current or "killed" in current:
            return
        if "sent" in by_state(sms_ledger(setup.db)):
            os.kill(current["pid"], signal.SIGKILL)
            current["killed"] = n

    async with CrashTwilio(default=slow(DELAY_S), on_request=on_request) as fake:
        setup = write_sms_setup(tmp_path, fake, DUE, contacts=CONTACTS, rate=RATE, max_in_flight=MAX_IN_FLIGHT)
        env = twilio_env(fake) | {"TOPSLOT_NODE_ID": NODE_ID}
        imported = await topslot(
            setup, "contacts", "import", str(setup.contacts_csv), log=tmp_path / "import.log", **twilio_env(fake)
        )
        assert await imported.wait() == 0, tail(tmp_path / "import.log")

        # ---- first run: dies by SIGKILL in mid-bucket
        first_log = tmp_path / "run1.log"
        fail = {"TOPSLOT_FAILPOINT": step.failpoint} if step.failpoint else {}
        started = time.monotonic()
        proc = await topslot(setup, "run", "--from", sim_time(FIRST_FROM), log=first_log, **env, **fail)
        current["pid"] = proc.pid
        try:
            died = await wait_until(lambda: proc.returncode is not None, DEATH_TIMEOUT_S)
        finally:
            if proc.returncode is None:
                proc.kill()
        assert died, f"the daemon did not die at {step.name}: {counts(sms_ledger(setup.db))}\n{tail(first_log)}"
        assert await proc.wait() == -signal.SIGKILL, tail(first_log)
        first_s = time.monotonic() - started
        assert await wait_until(lambda: fake.in_flight == 0, 10)  # the fake has read all that reached it
        at_death = sms_ledger(setup.db)
        states_at_death = by_state(at_death)
        sending_at_death = states_at_death.get("sending", set())
        reached_at_death = requests_by_number(fake)
        answered_at_death = {r.to for r in fake.requests if r.answered == 201}
        restart_index = len(fake.requests)

        # ---- second run: same node, no failpoint, within the slot's grace; recovers and finishes
        second_log = tmp_path / "run2.log"
        started = time.monotonic()
        proc = await topslot(setup, "run", "--from", sim_time(RESTART_FROM), log=second_log, **env)
        current["pid"] = proc.pid

        def finished() -> bool:
            rows = sms_ledger(setup.db)
            return (
                len(rows) == CONTACTS
                and not any(r.state in NON_TERMINAL for r in rows.values())
                and bool(log_events(second_log, "daemon_ready"))
            )

        try:
            await wait_until(lambda: proc.returncode is not None or finished(), FINISH_TIMEOUT_S)
            second_s = time.monotonic() - started
            assert proc.returncode is None, f"the restarted daemon stopped on its own\n{tail(second_log)}"
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert finished(), f"rows left unfinished: {counts(sms_ledger(setup.db))}\n{tail(second_log)}"
        assert code == 0, tail(second_log)
        final = sms_ledger(setup.db)
        reached = requests_by_number(fake)
        after_restart = requests_by_number(fake, restart_index)
        created = {m.to: sid for sid, m in fake.messages.items()}

    print(
        f"\n{step.name}: died after {first_s:.1f} s with {counts(at_death)} "
        f"(Twilio had {sum(reached_at_death.values())} requests); restart finished in {second_s:.1f} s "
        f"with {counts(final)} (Twilio got {sum(after_restart.values())} more)"
    )
    states = by_state(final)
    sent, unknown = states.get("sent", set()), states.get("unknown", set())
    phone = {r.id: r.phone for r in final.values()}
    assert set(phone.values()) == {phone_of(i) for i in range(CONTACTS)}

    # every row terminal; every number accepts, so nothing may fail
    assert len(final) == CONTACTS
    assert set(states) <= {"sent", "unknown"}, counts(final)
    assert {r.attempts for r in final.values()} == {1}
    # nothing was sent twice: at most one request per number, over both runs
    assert {to: n for to, n in reached.items() if n > 1} == {}
    # Twilio and the ledger agree: sent ⇒ Twilio created it, and the row holds its SID; reached ⇒ sent or unknown
    assert all(final[d].phone in created and final[d].provider_id == created[final[d].phone] for d in sent)
    assert all(final[d].provider == "twilio" and final[d].segments == 1 for d in sent)
    assert set(reached) <= {phone[d] for d in sent | unknown}
    assert all(final[d].coupon_code for d in sent | unknown)
    # what was settled before the kill stayed settled
    assert states_at_death.get("sent", set()) <= sent
    assert all(final[d] == at_death[d] for d in states_at_death.get("sent", set()))
    # the ambiguous window is exactly the rows the dead daemon had marked sending; none was resent
    assert sending_at_death, f"the kill at {step.name} did not land while sending: {counts(at_death)}"
    assert unknown == sending_at_death
    assert not {phone[d] for d in unknown} & set(after_restart)
    recovered = log_events(second_log, "leases_recovered")
    assert recovered and recovered[0]["sending_to_unknown"] == len(sending_at_death)
    assert recovered[0]["claimed_to_planned"] == len(states_at_death.get("claimed", set()))
    # rows never handed over were sent after the restart, each exactly once
    never_handed_over = states_at_death.get("claimed", set()) | states_at_death.get("planned", set())
    assert never_handed_over, f"the kill at {step.name} was not mid-bucket: {counts(at_death)}"
    assert never_handed_over <= sent
    assert {phone[d] for d in never_handed_over} == set(after_restart)
    assert not {phone[d] for d in never_handed_over} & set(reached_at_death)
    # mid-bucket: some rows had been sent and recorded before the kill
    assert 0 < len(states_at_death.get("sent", set())) < CONTACTS, counts(at_death)

    if step.failpoint is None:
        assert current.get("killed", 0) >= KILL_AT_REQUEST
        assert sum(reached_at_death.values()) >= current["killed"]
    if step.replies_unrecorded:
        # the failpoint's chunk had all its replies (every one a 201), yet its rows are only `unknown`
        assert len({phone[d] for d in sending_at_death} & answered_at_death) >= step.replies_unrecorded
