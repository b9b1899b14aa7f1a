"""The ledger under faults, for IM: SIGKILL the daemon in the middle of an IM bucket that goes to a
company gateway (``kind: webhook``), restart it, check the ledger against what the gateway received.

500 contacts with IM consent and an ``im_wecom`` id, one slot; the fake gateway (a real HTTP server in
this process that checks every signature and drops repeated Idempotency-Keys, with a small delay per
request so that several are open at once) stands in for the company's relay; ``topslot run`` is a
child process on a simulated clock. The first run dies by SIGKILL in mid-bucket: at a failpoint in the
daemon, or killed by this test from inside the fake as the n-th request arrives (requests still open,
others not yet written). The second run (same node id, no failpoint, within the slot's grace)
recovers and finishes. Then:

- every row is terminal; every send attempt was the only one (attempts == 1);
- nothing was sent twice: the gateway forwarded each Idempotency-Key at most once, and — stricter,
  since the gateway's de-duplication must not be what saves us — it received at most one raw POST per
  key (and per recipient), every one signed and answered 200;
- every ``sent`` row's message reached the gateway (its key was forwarded, its recipient and delivery
  id in the payload) and the row holds ``wecom:<the gateway's id>``; the gateway got nothing the
  ledger does not account for (``sent`` or ``unknown``);
- the ``unknown`` rows are only rows that were ``sending`` at the kill and on the wire by the
  hand-over journal, and none of them got a request after the restart (not even a "safe" repeat
  with the same key); the other ``sending`` rows were settled by the journal;
- rows never handed over (``claimed`` or ``planned`` at the kill) were sent after the restart, each
  exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from channels.fake_im_gateway import slow

from dispatch.crash_support import (
    IM_PROVIDER,
    NODE_ID,
    CrashImGateway,
    assert_recovered_once,
    by_state,
    counts,
    im_env,
    im_id_of,
    im_ledger,
    import_contacts,
    kill_once_sent,
    run_until_finished,
    run_until_killed,
    wait_until,
    write_im_setup,
)
from topslot.dispatch.dispatcher import IN_FLIGHT, chunk_rows

pytestmark = pytest.mark.slow

DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)
RATE = 250.0  # messages/s (the messenger's token bucket): the bucket takes ~2.5 s
CHUNK = chunk_rows(RATE)  # rows per chunk at this rate
CONTACTS = 5 * CHUNK  # 5 chunks: a kill in the 2nd or 3rd leaves some sent, some on the wire, some not handed over
MAX_IN_FLIGHT = 8  # requests open at once
DELAY_S = 0.02  # the gateway answers each request after this long: several are open at any moment
FIRST_FROM = DUE - timedelta(seconds=63)  # the bucket starts at due − 60 s
RESTART_FROM = DUE + timedelta(minutes=2)  # late, but within the 15-minute grace
KILL_AT_REQUEST = 3 * CHUNK // 2  # the "mid_request" step: SIGKILL as the gateway reads this request (or a later one): mid 2nd chunk
DEATH_TIMEOUT_S = 20
FINISH_TIMEOUT_S = 20
TEST_TIMEOUT_S = 55  # the whole test, whatever goes wrong (each run takes ~7 s)

assert CONTACTS >= (IN_FLIGHT + 2) * CHUNK, "some chunks must still be claimed, not on the wire, at the kill"


@dataclass(frozen=True)
class Step:
    name: str
    failpoint: str | None  # None: the test kills the daemon from the fake at KILL_AT_REQUEST
    replies_unrecorded: int = 0  # at least this many `sending` rows at the kill had their 200 already


STEPS = [
    Step("after_render_mid_bucket", "after_render:3"),  # the 3rd chunk: rendered, marked sending, none handed over
    Step("mid_request", None),  # requests open at the gateway, others not yet written
    Step("after_reply", "after_reply:2", replies_unrecorded=CHUNK),  # a chunk's 200s are in, not recorded
]


@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
async def test_sigkill_mid_im_bucket_then_restart_hands_each_message_over_once(tmp_path: Path, step: Step) -> None:
    current: dict[str, int] = {}  # the running daemon's pid, for the kill from the fake
    kill = kill_once_sent(current, after=KILL_AT_REQUEST, ledger=lambda: im_ledger(setup.db))

    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        CrashImGateway(
            provider=IM_PROVIDER, default=slow(DELAY_S), on_request=kill if step.failpoint is None else None
        ) as fake,
    ):
        setup = write_im_setup(tmp_path, fake, DUE, contacts=CONTACTS, rate=RATE, max_in_flight=MAX_IN_FLIGHT)
        env = im_env(fake) | {"TOPSLOT_NODE_ID": NODE_ID}
        await import_contacts(setup, tmp_path / "import.log", **im_env(fake))

        # ---- first run: dies by SIGKILL in mid-bucket
        first_s = await run_until_killed(
            setup, tmp_path / "run1.log", current, start=FIRST_FROM, failpoint=step.failpoint, step=step.name,
            timeout=DEATH_TIMEOUT_S, ledger=lambda: im_ledger(setup.db), **env,
        )  # fmt: skip
        assert await wait_until(lambda: fake.in_flight == 0, 5)  # the gateway has handled all that reached it
        at_death = im_ledger(setup.db)
        posts_at_death = fake.posts_per_key()
        answered_at_death = {r.key for r in fake.requests if r.answered == 200}
        restart_index = len(fake.requests)

        # ---- second run: same node, no failpoint, within the slot's grace; recovers and finishes
        second_log = tmp_path / "run2.log"
        second_s = await run_until_finished(
            setup, second_log, current, start=RESTART_FROM, contacts=CONTACTS, timeout=FINISH_TIMEOUT_S,
            stop_timeout=10, ledger=lambda: im_ledger(setup.db), **env,
        )  # fmt: skip
        final = im_ledger(setup.db)
        requests = list(fake.requests)
        posts = fake.posts_per_key()
        after_restart = fake.posts_per_key(restart_index)
        forwarded = dict(fake.messages)
        duplicates = fake.duplicates

    print(
        f"\n{step.name}: died after {first_s:.1f} s with {counts(at_death)} "
        f"(the gateway had {sum(posts_at_death.values())} requests); restart finished in {second_s:.1f} s "
        f"with {counts(final)} (the gateway got {sum(after_restart.values())} more)"
    )
    # every row terminal and tried once, settled rows kept, unknown ⊆ sending at the kill, the rest sent
    recovered = assert_recovered_once(final, at_death, second_log, contacts=CONTACTS, step=step.name)
    sent, unknown, never_handed_over = recovered.sent, recovered.unknown, recovered.never_handed_over
    sending_at_death = by_state(at_death).get("sending", set())
    key = {d: str(d) for d in final}  # the Idempotency-Key of each row: its delivery id
    recipient = {d: r.im_id for d, r in final.items()}
    assert set(recipient.values()) == {im_id_of(i) for i in range(CONTACTS)}

    # nothing was sent twice: each key forwarded at most once, and never even posted twice
    assert duplicates == 0
    assert {k: n for k, n in posts.items() if n > 1} == {}
    assert {r: n for r, n in Counter(q.recipient for q in requests).items() if n > 1} == {}
    assert all(q.verified and q.key for q in requests)  # every request signed and keyed
    assert {q.answered for q in requests} <= {200, None}  # None: answered to a dead daemon's socket
    # the gateway and the ledger agree: sent ⇒ forwarded with that row's key, recipient and delivery id,
    # and the row holds the gateway's id; posted ⇒ sent or unknown
    for d in sent:
        message = forwarded.get(key[d])
        assert message is not None, f"row {d} is sent but the gateway never forwarded key {key[d]}"
        assert (message.payload["delivery_id"], message.recipient) == (d, recipient[d])
        assert message.payload["campaign_id"] == "crash-test-im" and message.payload["card"]["coupon"]
        assert final[d].provider == IM_PROVIDER and final[d].provider_id == f"{IM_PROVIDER}:{message.gateway_id}"
    assert set(posts) <= {key[d] for d in sent | unknown}
    # none of the ambiguous rows was re-posted
    assert not {key[d] for d in unknown} & set(after_restart)
    # rows never handed over were sent after the restart, each exactly once; so were the rows the
    # hand-over journal proved had never left, and nothing else
    assert {key[d] for d in never_handed_over} <= set(after_restart)
    assert set(after_restart) <= {key[d] for d in never_handed_over | (sending_at_death - unknown)}
    assert set(after_restart.values()) == {1}
    assert not {key[d] for d in never_handed_over} & set(posts_at_death)

    if step.failpoint is None:
        assert current.get("killed", 0) >= KILL_AT_REQUEST
        assert sum(posts_at_death.values()) >= current["killed"]
    if step.replies_unrecorded:
        # the failpoint's chunk had all its answers (every one a 200), yet its rows are only `unknown`
        assert len({key[d] for d in sending_at_death} & answered_at_death) >= step.replies_unrecorded
