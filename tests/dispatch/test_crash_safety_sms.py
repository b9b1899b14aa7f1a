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
- the ``unknown`` rows are only rows that were ``sending`` at the kill whose request the hand-over
  journal shows written without an answer on record, and none of them got a request after the
  restart; the other ``sending`` rows were settled by the journal (``sent`` with their SID, or
  planned again and sent once);
- rows never handed over (``claimed`` at the kill) were sent after the restart, each exactly once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from channels.fake_twilio import slow

from dispatch.crash_support import (
    NODE_ID,
    CrashTwilio,
    assert_recovered_once,
    by_state,
    counts,
    import_contacts,
    kill_once_sent,
    phone_of,
    run_until_finished,
    run_until_killed,
    sms_ledger,
    twilio_env,
    wait_until,
    write_sms_setup,
)
from topslot.dispatch.dispatcher import IN_FLIGHT, chunk_rows

pytestmark = pytest.mark.slow

DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)
RATE = 250.0  # SMS/s (the messenger's token bucket): the bucket takes ~2.5 s
CHUNK = chunk_rows(RATE)  # rows per chunk at this rate
CONTACTS = 5 * CHUNK  # 5 chunks: a kill in the 2nd or 3rd leaves some sent, some on the wire, some not handed over
MAX_IN_FLIGHT = 8  # requests open at once
DELAY_S = 0.02  # the fake answers each request after this long: several are open at any moment
FIRST_FROM = DUE - timedelta(seconds=63)  # the bucket starts at due − 60 s
RESTART_FROM = DUE + timedelta(minutes=2)  # late, but within the 15-minute grace
KILL_AT_REQUEST = 3 * CHUNK // 2  # the "mid_request" step: SIGKILL as the fake reads this request (or a later one): mid 2nd chunk
DEATH_TIMEOUT_S = 30
FINISH_TIMEOUT_S = 30

assert CONTACTS >= (IN_FLIGHT + 2) * CHUNK, "some chunks must still be claimed, not on the wire, at the kill"


@dataclass(frozen=True)
class Step:
    name: str
    failpoint: str | None  # None: the test kills the daemon from the fake at KILL_AT_REQUEST
    replies_unrecorded: int = 0  # at least this many `sending` rows at the kill had their 201 already


STEPS = [
    Step("after_render_mid_bucket", "after_render:3"),  # the 3rd chunk: rendered, marked sending, none handed over
    Step("mid_request", None),  # requests open at the fake, others not yet written
    Step("after_reply", "after_reply:2", replies_unrecorded=CHUNK),  # a chunk's 201s are in, not recorded
]


def requests_by_number(fake: CrashTwilio, start: int = 0, end: int | None = None) -> Counter[str]:
    return Counter(r.to for r in fake.requests[start:end])


@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
async def test_sigkill_mid_sms_bucket_then_restart_sends_every_number_once(tmp_path: Path, step: Step) -> None:
    current: dict[str, int] = {}  # the running daemon's pid, for the kill from the fake
    kill = kill_once_sent(current, after=KILL_AT_REQUEST, ledger=lambda: sms_ledger(setup.db))

    async with CrashTwilio(default=slow(DELAY_S), on_request=kill if step.failpoint is None else None) as fake:
        setup = write_sms_setup(tmp_path, fake, DUE, contacts=CONTACTS, rate=RATE, max_in_flight=MAX_IN_FLIGHT)
        env = twilio_env(fake) | {"TOPSLOT_NODE_ID": NODE_ID}
        await import_contacts(setup, tmp_path / "import.log", **twilio_env(fake))

        # ---- first run: dies by SIGKILL in mid-bucket
        first_s = await run_until_killed(
            setup, tmp_path / "run1.log", current, start=FIRST_FROM, failpoint=step.failpoint, step=step.name,
            timeout=DEATH_TIMEOUT_S, ledger=lambda: sms_ledger(setup.db), **env,
        )  # fmt: skip
        assert await wait_until(lambda: fake.in_flight == 0, 10)  # the fake has read all that reached it
        at_death = sms_ledger(setup.db)
        reached_at_death = requests_by_number(fake)
        answered_at_death = {r.to for r in fake.requests if r.answered == 201}
        restart_index = len(fake.requests)

        # ---- second run: same node, no failpoint, within the slot's grace; recovers and finishes
        second_log = tmp_path / "run2.log"
        second_s = await run_until_finished(
            setup, second_log, current, start=RESTART_FROM, contacts=CONTACTS, timeout=FINISH_TIMEOUT_S,
            stop_timeout=20, ledger=lambda: sms_ledger(setup.db), **env,
        )  # fmt: skip
        final = sms_ledger(setup.db)
        reached = requests_by_number(fake)
        after_restart = requests_by_number(fake, restart_index)
        created = {m.to: sid for sid, m in fake.messages.items()}

    print(
        f"\n{step.name}: died after {first_s:.1f} s with {counts(at_death)} "
        f"(Twilio had {sum(reached_at_death.values())} requests); restart finished in {second_s:.1f} s "
        f"with {counts(final)} (Twilio got {sum(after_restart.values())} more)"
    )
    # every row terminal and tried once, settled rows kept, unknown ⊆ sending at the kill, the rest sent
    recovered = assert_recovered_once(final, at_death, second_log, contacts=CONTACTS, step=step.name)
    sent, unknown, never_handed_over = recovered.sent, recovered.unknown, recovered.never_handed_over
    sending_at_death = by_state(at_death).get("sending", set())
    phone = {r.id: r.phone for r in final.values()}
    assert set(phone.values()) == {phone_of(i) for i in range(CONTACTS)}

    # nothing was sent twice: at most one request per number, over both runs
    assert {to: n for to, n in reached.items() if n > 1} == {}
    # Twilio and the ledger agree: sent ⇒ Twilio created it, and the row holds its SID; reached ⇒ sent or unknown
    assert all(final[d].phone in created and final[d].provider_id == created[final[d].phone] for d in sent)
    assert all(final[d].provider == "twilio" and final[d].segments == 1 for d in sent)
    assert set(reached) <= {phone[d] for d in sent | unknown}
    # none of the ambiguous rows was resent
    assert not {phone[d] for d in unknown} & set(after_restart)
    # rows never handed over were sent after the restart, each exactly once; so were the rows the
    # hand-over journal proved had never left, and nothing else
    assert {phone[d] for d in never_handed_over} <= set(after_restart)
    assert set(after_restart) <= {phone[d] for d in never_handed_over | (sending_at_death - unknown)}
    assert not {phone[d] for d in never_handed_over} & set(reached_at_death)

    if step.failpoint is None:
        assert current.get("killed", 0) >= KILL_AT_REQUEST
        assert sum(reached_at_death.values()) >= current["killed"]
    if step.replies_unrecorded:
        # the failpoint's chunk had all its replies (every one a 201), yet its rows are only `unknown`
        assert len({phone[d] for d in sending_at_death} & answered_at_death) >= step.replies_unrecorded
