"""A bucket end to end against a real SMTP server over TCP: claim → coupon → render → send → ledger."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from channels.scripted_smtp import ScriptedSmtpServer
from sqlalchemy import insert, select
from structlog.testing import capture_logs

from dispatch.fixtures import DUE, NOW, campaign, import_people, ledger_by_email, settings
from topslot.channel import spec_of
from topslot.clock import FakeClock
from topslot.coupons import codes
from topslot.coupons.keys import active_coupon_key
from topslot.dispatch.dispatcher import CHUNK, CHUNK_MIN, ChunkWindow, chunk_rows
from topslot.dispatch.service import DispatchService
from topslot.links.tokens import verify
from topslot.scheduling.scheduler import BucketScheduler
from topslot.store import ledger
from topslot.store.ledger import Claimed
from topslot.store.schema import coupon_codes, deliveries, suppressions

EMAILS = [
    "accept+1@a.example",
    "accept+2@b.example",
    "greylist+1@a.example",
    "hard-bounce+1@a.example",
    "data-451+1@b.example",
    "data-550+1@b.example",
    "data-spam+1@a.example",
    "drop-after-dot+1@a.example",
]


async def run_bucket(engine, tmp_path, server, clock):  # noqa: ANN001, ANN201
    s = settings(tmp_path, server.port)
    c = campaign()
    service = DispatchService(engine, s, clock, node="test-node")
    scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
    await service.on_campaigns_changed({c.id: c})
    await scheduler.on_campaigns_changed({c.id: c})
    clock.set(DUE - timedelta(minutes=1))
    claimed = await scheduler.fire_bucket(c.id, "email", DUE)
    return service, claimed


async def test_every_reply_lands_in_its_ledger_state(engine, tmp_path) -> None:
    async with ScriptedSmtpServer() as server:
        await import_people(engine, tmp_path, EMAILS)
        clock = FakeClock(NOW)
        service, claimed = await run_bucket(engine, tmp_path, server, clock)
        try:
            assert claimed == len(EMAILS)
            rows = await ledger_by_email(engine)
            got = {email: (r["state"], r["attempts"]) for email, r in rows.items()}
            assert got == {
                "accept+1@a.example": ("sent", 1),
                "accept+2@b.example": ("sent", 1),
                "greylist+1@a.example": ("retry_wait", 1),
                "hard-bounce+1@a.example": ("failed", 1),
                "data-451+1@b.example": ("retry_wait", 1),
                "data-550+1@b.example": ("failed", 1),
                "data-spam+1@a.example": ("failed", 1),
                "drop-after-dot+1@a.example": ("unknown", 1),
            }
            assert rows["accept+1@a.example"]["provider_id"].startswith("Q")
            assert "5.1.1" in rows["hard-bounce+1@a.example"]["last_error"]
            async with engine.connect() as conn:
                suppressed = set((await conn.execute(select(suppressions.c.address))).scalars())
            assert suppressed == {
                "hard-bounce+1@a.example",
                "data-550+1@b.example",
            }  # spam refusal is not the address's fault

            # the retry poller, six minutes later: the greylisted address now takes it, 451 again for the other
            clock.advance(timedelta(minutes=6))
            assert await service.retry_due() == 2
            rows = await ledger_by_email(engine)
            assert (rows["greylist+1@a.example"]["state"], rows["greylist+1@a.example"]["attempts"]) == ("sent", 2)
            assert rows["data-451+1@b.example"]["state"] == "retry_wait"
            # past the slot's 15-minute grace a retry is not attempted: failed, never sent at noon
            clock.advance(timedelta(minutes=30))
            assert await service.retry_due() == 1
            rows = await ledger_by_email(engine)
            assert rows["data-451+1@b.example"]["state"] == "failed"
            assert "grace" in rows["data-451+1@b.example"]["last_error"]
            # nobody got the same delivery twice
            per_rcpt = [r.rcpt_to[0] for r in server.received]
            assert per_rcpt.count("accept+1@a.example") == 1
            assert per_rcpt.count("drop-after-dot+1@a.example") == 1
        finally:
            await service.close()


async def test_the_message_carries_its_coupon_signed_links_and_unsubscribe_headers(engine, tmp_path) -> None:
    async with ScriptedSmtpServer() as server:
        ids = await import_people(engine, tmp_path, ["accept+1@a.example"])
        service, _ = await run_bucket(engine, tmp_path, server, FakeClock(NOW))
        try:
            row = (await ledger_by_email(engine))["accept+1@a.example"]
            [received] = server.accepted()
            msg = message_from_bytes(received.data, policy=policy.default)
            assert msg["Subject"] == "An offer for Name0"
            assert msg["To"].addresses[0].addr_spec == "accept+1@a.example"
            assert msg["Message-ID"].startswith(f"<d{row['id']}.dispatch-test@")
            assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            unsubscribe = msg["List-Unsubscribe"]
            assert "<http://127.0.0.1:8080/u/" in unsubscribe and "<mailto:unsubscribe+" in unsubscribe
            text = msg.get_body(("plain",)).get_content()
            html = msg.get_body(("html",)).get_content()
            # the coupon: the one in the ledger, verifiable offline for this contact
            code = row["coupon_code"]
            assert code and code in text and code in html
            verdict = codes.verify(
                code, active_coupon_key(service.keyring), "dispatch-test", ids["accept+1@a.example"], prefix="TS"
            )
            assert verdict.valid
            async with engine.connect() as conn:
                state = await conn.scalar(select(coupon_codes.c.state).where(coupon_codes.c.code == code))
            assert state == "assigned"
            # every link is a signed /c/ link for this delivery; no destination in the URL
            assert 'href="https://shop.example.com/offer"' not in html
            tokens = [part.split('"')[0] for part in html.split('href="http://127.0.0.1:8080/c/')[1:]]
            assert len(tokens) == 2
            for token in tokens:
                claims = verify(token, service.keyring, "click")
                assert claims.delivery_id == row["id"]
            assert "shop.example.com" not in "".join(tokens)
        finally:
            await service.close()


async def test_an_unsubscribe_after_the_claim_is_honoured_before_sending(engine, tmp_path) -> None:
    async with ScriptedSmtpServer() as server:
        await import_people(engine, tmp_path, ["accept+1@a.example", "accept+2@a.example"])
        s = settings(tmp_path, server.port)
        c = campaign()
        clock = FakeClock(NOW)
        service = DispatchService(engine, s, clock, node="test-node")
        try:
            scheduler = BucketScheduler(engine, s, clock, owner=service.owner)  # claims only
            await service.on_campaigns_changed({c.id: c})
            await scheduler.on_campaigns_changed({c.id: c})
            clock.set(DUE - timedelta(minutes=1))
            await scheduler.fire_bucket(c.id, "email", DUE)
            claims = await ledger.claim_bucket(
                engine, c.id, "email", DUE, owner=service.owner, lease=timedelta(minutes=5), now=clock.now()
            )
            assert claims == []  # fire_bucket claimed them all already
            rows = await ledger_by_email(engine)
            assert {r["state"] for r in rows.values()} == {"claimed"}
            async with engine.begin() as conn:  # the unsubscribe lands between claim and send
                await conn.execute(
                    insert(suppressions).values(
                        channel="email",
                        address=spec_of("email").suppression_address("accept+2@a.example"),
                        reason="unsubscribed",
                        created_at=NOW,
                    )
                )
            claimed = [Claimed(r["id"], r["contact_id"], r["lease_epoch"]) for r in rows.values()]
            await service.dispatch(c, "email", DUE, claimed)
            rows = await ledger_by_email(engine)
            assert (rows["accept+1@a.example"]["state"], rows["accept+2@a.example"]["state"]) == ("sent", "skipped")
            assert rows["accept+2@a.example"]["skip_reason"] == "suppressed"
            assert [r.rcpt_to for r in server.received] == [["accept+1@a.example"]]
        finally:
            await service.close()


async def test_pause_on_exhausted_coupons_hands_rows_back_once_and_sends_nothing(engine, tmp_path) -> None:
    async with ScriptedSmtpServer() as server:
        await import_people(engine, tmp_path, ["accept+1@a.example", "accept+2@a.example"])
        s = settings(tmp_path, server.port)
        c = campaign(coupon={"pool": "empty-pool", "on_exhausted": "pause"})
        clock = FakeClock(NOW)
        service = DispatchService(engine, s, clock, node="test-node")
        try:
            scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
            await service.on_campaigns_changed({c.id: c})
            await scheduler.on_campaigns_changed({c.id: c})
            clock.set(DUE - timedelta(minutes=1))
            claimed = await asyncio.wait_for(scheduler.fire_bucket(c.id, "email", DUE), timeout=10)
            assert claimed == 2  # one pass through the bucket, not a loop
            rows = await ledger_by_email(engine)
            assert {r["state"] for r in rows.values()} == {"planned"}  # waiting for codes
            assert server.received == []
        finally:
            await service.close()


def test_a_chunk_holds_half_a_second_of_the_providers_rate_within_its_bounds() -> None:
    assert chunk_rows(None) == CHUNK == 1000  # no rate (a file outbox): the largest chunk
    assert chunk_rows(1_000_000) == CHUNK
    assert chunk_rows(2000) == 1000
    assert chunk_rows(50) == 25  # SMTP's default rate
    assert chunk_rows(1) == chunk_rows(0.1) == CHUNK_MIN == 10  # Twilio's default rate


async def test_the_bucket_goes_out_in_chunks_sized_by_the_providers_rate(engine, tmp_path) -> None:
    emails = [f"accept+{i}@d{i % 3}.example" for i in range(25)]
    async with ScriptedSmtpServer() as server:
        await import_people(engine, tmp_path, emails)
        local = {"host": "127.0.0.1", "port": server.port, "tls": "none", "pool_size": 4, "rate_per_second": 40}
        s = settings(tmp_path, server.port, smtp={"local": local})
        c = campaign()
        clock = FakeClock(NOW)
        service = DispatchService(engine, s, clock, node="test-node")
        scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
        try:
            await service.on_campaigns_changed({c.id: c})
            await scheduler.on_campaigns_changed({c.id: c})
            clock.set(DUE - timedelta(minutes=1))
            with capture_logs() as logs:
                assert await scheduler.fire_bucket(c.id, "email", DUE) == 25
        finally:
            await service.close()
        rows = await ledger_by_email(engine)
    assert {r["state"] for r in rows.values()} == {"sent"} and len(server.accepted()) == 25
    # 40 messages/s: chunks of 20 rows (half a second), each marked and recorded on its own
    assert sorted(e["rows"] for e in logs if e["event"] == "chunk_sent") == [5, 20]


async def test_the_chunk_window_keeps_at_most_its_size_in_flight_and_waits_for_all() -> None:
    running, most, done = 0, 0, []

    async def chunk(i: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01 * (i % 3))
        running -= 1
        done.append(i)

    async with ChunkWindow(3) as window:
        for i in range(10):
            await window.submit(lambda i=i: chunk(i))
    assert most == 3 and sorted(done) == list(range(10))


async def test_a_failed_chunk_stops_new_ones_and_is_raised_once_the_others_finish() -> None:
    finished: list[int] = []

    async def chunk(i: int) -> None:
        await asyncio.sleep(0.02 if i else 0)
        if i == 0:
            raise RuntimeError("database gone")
        finished.append(i)

    with pytest.raises(RuntimeError, match="database gone"):
        async with ChunkWindow(2) as window:
            for i in range(5):
                await window.submit(lambda i=i: chunk(i))
    assert finished == [1]  # the chunk already on the wire was recorded; none started after the failure


async def test_room_waits_for_a_free_place_without_taking_it_and_raises_a_failure() -> None:
    release = asyncio.Event()

    async def chunk(fail: bool) -> None:
        await release.wait()
        if fail:
            raise RuntimeError("database gone")

    with pytest.raises(RuntimeError, match="database gone"):
        async with ChunkWindow(1) as window:
            await window.room()  # free: at once
            await window.room()  # still free: room took no place
            await window.submit(lambda: chunk(True))
            waiting = asyncio.ensure_future(window.room())
            await asyncio.sleep(0.01)
            assert not waiting.done()  # the one place is taken
            release.set()
            await waiting  # the place came free by a failure: raised here, before another chunk is marked


async def test_a_retry_is_not_sent_when_another_campaign_sent_to_the_contact_since(engine, tmp_path) -> None:
    """Frequency caps at the retry's claim: the greylisted message's retry would be the contact's
    second email within the cap's period (another campaign sent meanwhile): skipped, never sent."""
    async with ScriptedSmtpServer() as server:
        ids = await import_people(engine, tmp_path, ["greylist+1@a.example", "accept+1@a.example"])
        s = settings(tmp_path, server.port, frequency_caps={"email": {"max": 1, "per": "7d"}})
        c, other = campaign(), campaign(id="other-campaign")
        clock = FakeClock(NOW)
        service = DispatchService(engine, s, clock, node="test-node")
        try:
            scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
            await service.on_campaigns_changed({c.id: c})
            await scheduler.on_campaigns_changed({c.id: c})
            clock.set(DUE - timedelta(minutes=1))
            assert await scheduler.fire_bucket(c.id, "email", DUE) == 2
            assert (await ledger_by_email(engine))["greylist+1@a.example"]["state"] == "retry_wait"
            await ledger.record_campaign(engine, other, "hash", NOW)
            async with engine.begin() as conn:  # another node's campaign reached the contact meanwhile
                await conn.execute(insert(deliveries).values(
                    campaign_id=other.id, contact_id=ids["greylist+1@a.example"], channel="email",
                    slot_date=DUE.date(), slot="07:32", due_utc=DUE + timedelta(minutes=2),
                    timezone="UTC", tz_source="contact", state="sent", created_at=NOW, updated_at=NOW,
                ))  # fmt: skip
            received = len(server.received)
            clock.advance(timedelta(minutes=6))
            assert await service.retry_due() == 0
            async with engine.connect() as conn:
                mine = (deliveries.c.campaign_id == c.id) & (deliveries.c.contact_id == ids["greylist+1@a.example"])
                row = (await conn.execute(select(deliveries.c.state, deliveries.c.skip_reason).where(mine))).one()
            assert tuple(row) == ("skipped", "frequency_cap")
            assert len(server.received) == received
        finally:
            await service.close()
