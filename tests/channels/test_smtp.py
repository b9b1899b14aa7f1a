"""SmtpPool against real SMTP servers over TCP on 127.0.0.1: each scripted answer lands in the right
error kind, connections are pooled, domains and rates are limited, servers fail over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from topslot.channels.smtp import Backoff, SmtpPool, SmtpTimeouts
from topslot.errors import AmbiguousSendError, PermanentSendError, TransientSendError
from topslot.rendering import RenderedEmail
from topslot.rendering.mime import MimeAssembler

from .scripted_smtp import ScriptedSmtpServer, unused_port
from .support import FrozenTime, MonotonicFake, envelope, server_config

WHEN = datetime(2027, 5, 6, 7, 20, tzinfo=UTC)


def pool_for(*servers: ScriptedSmtpServer | int, **options: object) -> SmtpPool:
    """A pool over the given servers (or bare ports), in that order; a message finding every server
    down fails at once unless ``hold_when_down`` says otherwise (the tests of holding do)."""
    options.setdefault("hold_when_down", 0.0)
    overrides = options.pop("config", {})
    configs = {
        f"s{i}": server_config(s if isinstance(s, int) else s.port, **overrides)  # type: ignore[arg-type]
        for i, s in enumerate(servers)
    }
    return SmtpPool(configs, **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------- accepted


async def test_accepted_message_arrives_byte_exact_and_returns_the_queue_id(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(smtp_server)
    message = envelope("accept@a.example")
    provider_id = await pool.send(message)
    await pool.close()
    assert provider_id == "Q1"
    [got] = smtp_server.received
    assert got.mail_from == "news@shop.example" and got.rcpt_to == ["accept@a.example"]
    assert got.data == message.data


async def test_dots_are_stuffed_and_bare_line_feeds_become_crlf(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(smtp_server)
    body = b"Subject: dots\r\n\r\n.leading dot\n..two\r\n.\r\nend"
    await pool.send(envelope("accept@a.example", body=body))
    await pool.close()
    assert smtp_server.received[0].data == b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"


async def test_eight_bit_body_is_announced_with_8bitmime(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(smtp_server)
    await pool.send(envelope("accept@a.example", body="Subject: 你好\r\n\r\n母亲节快乐\r\n".encode()))
    await pool.close()
    assert smtp_server.received[0].data.decode() == "Subject: 你好\r\n\r\n母亲节快乐\r\n"
    assert any("BODY=8BITMIME" in c for c in smtp_server.mail_commands)


async def test_eight_bit_parts_are_re_encoded_for_a_server_without_8bitmime() -> None:
    assembler = MimeAssembler(from_="Shop <news@shop.example>", campaign_id="c1", eight_bit=True)
    parts = RenderedEmail("Für Zoë", "<p>Grüße, Zoë — 20 %</p>\n", "Grüße, Zoë\n", ())
    eight = assembler.assemble(parts, to="accept@a.example", delivery_id=5, date=WHEN)
    seven = MimeAssembler(from_="Shop <news@shop.example>", campaign_id="c1", eight_bit=False).assemble(
        parts, to="accept@a.example", delivery_id=5, date=WHEN
    )
    assert b"Content-Transfer-Encoding: 8bit" in eight and seven.isascii()
    async with ScriptedSmtpServer(eight_bit_mime=False) as plain, ScriptedSmtpServer() as modern:
        for server, expected in ((plain, seven), (modern, eight)):
            pool = pool_for(server)
            await pool.send(envelope("accept@a.example", body=eight))
            await pool.close()
            assert server.received[0].data == expected
        assert not any("BODY=8BITMIME" in c for c in plain.mail_commands)
        assert any("BODY=8BITMIME" in c for c in modern.mail_commands)


# ---------------------------------------------------------------- replies → error kinds


async def test_greylisting_451_is_transient_with_a_hint_then_accepted(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(smtp_server)
    with pytest.raises(TransientSendError) as caught:
        await pool.send(envelope("greylist@a.example"))
    assert caught.value.code == 451 and caught.value.retry_after == 300.0
    assert await pool.send(envelope("greylist@a.example")) == "Q1"
    await pool.close()
    assert smtp_server.connections == 1  # the 451 left the session usable (RSET, same connection)
    assert smtp_server.commands["RSET"] == 1


@pytest.mark.parametrize(
    ("rcpt", "code", "suppress"),
    [
        ("hard-bounce@a.example", 550, True),  # 550 5.1.1 at RCPT
        ("unknown-plain@a.example", 550, True),  # 550 "No such user" without an enhanced code
        ("mailbox-full@a.example", 552, False),  # 5.2.2: the message failed, the address lives
        ("data-550@a.example", 550, True),  # 5.1.1 in the reply to the final dot
        ("data-spam@a.example", 554, False),  # 5.7.1 policy: not the address's fault
    ],
)
async def test_5xx_is_permanent_and_only_dead_addresses_are_suppressed(
    smtp_server: ScriptedSmtpServer, rcpt: str, code: int, suppress: bool
) -> None:
    pool = pool_for(smtp_server)
    with pytest.raises(PermanentSendError) as caught:
        await pool.send(envelope(rcpt))
    assert caught.value.code == code and caught.value.suppress is suppress
    assert await pool.send(envelope("accept@a.example"))  # the session is still good
    await pool.close()
    assert smtp_server.connections == 1


async def test_sender_refused_is_permanent_but_never_suppresses_the_recipient() -> None:
    async with ScriptedSmtpServer(mail_reply="553 5.1.8 <news@shop.example>: Sender address rejected") as server:
        pool = pool_for(server)
        with pytest.raises(PermanentSendError) as caught:
            await pool.send(envelope("accept@a.example"))
        await pool.close()
    assert caught.value.code == 553 and caught.value.suppress is False


async def test_451_after_the_final_dot_is_transient(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(smtp_server)
    with pytest.raises(TransientSendError) as caught:
        await pool.send(envelope("data-451@a.example"))
    await pool.close()
    assert caught.value.code == 451


async def test_drop_after_the_final_dot_is_ambiguous(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(smtp_server)
    with pytest.raises(AmbiguousSendError) as caught:
        await pool.send(envelope("drop-after-dot@a.example"))
    assert caught.value.code == "disconnect"
    assert len(smtp_server.received) == 1  # the server did get the whole message
    assert await pool.send(envelope("accept@a.example")) == "Q2"  # a new connection takes over
    await pool.close()
    assert smtp_server.connections == 2
    assert pool.status()[0].up  # an ambiguous drop does not mark the server down


async def test_a_250_later_than_the_data_timeout_is_ambiguous() -> None:
    async with ScriptedSmtpServer(slow_seconds=1.5) as server:
        pool = pool_for(server, timeouts=SmtpTimeouts(command=5, data_end=0.3))
        with pytest.raises(AmbiguousSendError) as caught:
            await pool.send(envelope("slow-250@a.example"))
        for _ in range(100):  # let the server send its late 250
            if server.accepted():
                break
            await asyncio.sleep(0.05)
        await pool.close()
    assert caught.value.code == "timeout"
    assert len(server.accepted()) == 1  # it *was* accepted: resending would duplicate it


async def test_command_timeout_is_separate_from_the_long_data_end_timeout() -> None:
    """A 250 that takes longer than the command timeout is still fine after the final dot."""
    async with ScriptedSmtpServer(slow_seconds=0.4) as server:
        pool = pool_for(server, timeouts=SmtpTimeouts(command=0.1, data_end=5))
        assert await pool.send(envelope("slow-250@a.example")) == "Q1"
        await pool.close()


async def test_drop_mid_body_is_transient_and_nothing_was_received() -> None:
    # The body must be larger than the socket buffers on both sides, or all of it (the final dot
    # too) would already be in the kernel when the server resets: then nobody can tell.
    async with ScriptedSmtpServer(receive_buffer=4096) as server:
        pool = pool_for(server)
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 24_000  # 24 MB
        with pytest.raises(TransientSendError) as caught:
            await pool.send(envelope("drop-mid-body@a.example", body=big))
        assert caught.value.code == "lost_before_dot"
        assert server.received == []
        assert pool.status()[0].up
        # the same size, accepted: the wait for the buffer to empty ends normally
        assert await pool.send(envelope("accept@a.example", body=big)) == "Q1"
        assert server.received[0].data == big
        await pool.close()


async def test_421_mid_session_marks_the_server_down_then_reconnects_after_the_backoff() -> None:
    clock = MonotonicFake()
    async with ScriptedSmtpServer() as server:
        pool = pool_for(server, clock=clock, backoff=Backoff(first=2.0))
        assert await pool.send(envelope("accept@a.example"))
        with pytest.raises(TransientSendError) as caught:
            await pool.send(envelope("rcpt-421-once@a.example"))
        assert caught.value.code == 421 and caught.value.retry_after == pytest.approx(2.0)
        assert not pool.status()[0].up

        with pytest.raises(TransientSendError) as backing_off:  # still backing off: no new session
            await pool.send(envelope("rcpt-421-once@a.example"))
        assert backing_off.value.retry_after == pytest.approx(2.0)
        assert server.connections == 1

        clock.advance(2.5)
        assert await pool.send(envelope("rcpt-421-once@a.example"))
        await pool.close()
    assert server.connections == 2  # the 421 closed the first session; a new one took over
    assert [r.rcpt_to for r in server.accepted()] == [["accept@a.example"], ["rcpt-421-once@a.example"]]


async def test_backoff_doubles_while_a_server_keeps_failing_and_resets_on_success() -> None:
    clock = MonotonicFake()
    port = unused_port()
    pool = pool_for(port, clock=clock, backoff=Backoff(first=1.0, factor=2.0, most=3.0))
    waits = []
    for _ in range(4):
        with pytest.raises(TransientSendError) as caught:
            await pool.send(envelope("accept@a.example"))
        waits.append(caught.value.retry_after)
        clock.advance(10)
    assert waits == [1.0, 2.0, 3.0, 3.0]
    await pool.close()


# ---------------------------------------------------------------- failover


async def test_refused_connection_fails_over_to_the_next_server(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(unused_port(), smtp_server)
    assert await pool.send(envelope("accept@a.example")) == "Q1"
    assert await pool.send(envelope("accept@a.example")) == "Q2"
    first, second = pool.status()
    await pool.close()
    assert not first.up and first.failures == 1 and first.connects == 0
    assert second.up and second.connects == 1


async def test_a_421_greeting_fails_over_and_the_first_server_comes_back(smtp_server: ScriptedSmtpServer) -> None:
    clock = MonotonicFake()
    async with ScriptedSmtpServer(greeting="421 4.3.2 too busy") as busy:
        pool = pool_for(busy, smtp_server, clock=clock)
        assert await pool.send(envelope("accept@a.example")) == "Q1"
        assert busy.connections == 1 and busy.received == []
        busy.greeting = "220 back"
        clock.advance(60)
        assert await pool.send(envelope("accept@a.example")) == "Q1"  # the first server again
        await pool.close()
    assert len(busy.accepted()) == 1 and len(smtp_server.accepted()) == 1


async def test_a_421_mid_session_resends_on_the_next_server(smtp_server: ScriptedSmtpServer) -> None:
    async with ScriptedSmtpServer(rcpt_reply="421 4.3.2 Shutting down") as primary:
        pool = pool_for(primary, smtp_server)
        assert await pool.send(envelope("accept@a.example")) == "Q1"
        await pool.close()
    assert primary.accepted() == [] and len(smtp_server.accepted()) == 1


async def test_every_server_down_is_transient_with_the_shortest_wait() -> None:
    clock = MonotonicFake()
    pool = pool_for(unused_port(), unused_port(), clock=clock, backoff=Backoff(first=4.0))
    with pytest.raises(TransientSendError) as caught:
        await pool.send(envelope("accept@a.example"))
    assert caught.value.retry_after == pytest.approx(4.0)
    clock.advance(1.5)
    with pytest.raises(TransientSendError) as later:
        await pool.send(envelope("accept@a.example"))
    assert later.value.retry_after == pytest.approx(2.5)
    await pool.close()


# ---------------------------------------------------------------- pooling


async def test_pool_reuses_at_most_pool_size_connections(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(smtp_server, config={"pool_size": 3})
    ids = await asyncio.gather(*(pool.send(envelope(f"accept+{i}@d{i % 7}.example")) for i in range(60)))
    await pool.close()
    assert len(set(ids)) == 60 and len(smtp_server.accepted()) == 60
    assert smtp_server.connections <= 3 and smtp_server.most_open <= 3
    assert smtp_server.commands["QUIT"] == smtp_server.connections  # closed cleanly
    assert smtp_server.open_now == 0


async def test_a_connection_dropped_while_idle_is_replaced(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(smtp_server, config={"pool_size": 1})
    assert await pool.send(envelope("accept@a.example"))
    smtp_server.reset_all()  # the server times out / restarts its sessions
    assert await pool.send(envelope("accept@a.example"))  # no error reaches the caller
    await pool.close()
    assert smtp_server.connections == 2 and len(smtp_server.accepted()) == 2


async def test_idle_connections_are_checked_with_noop_then_replaced_when_too_old(
    smtp_server: ScriptedSmtpServer,
) -> None:
    clock = MonotonicFake()
    pool = pool_for(smtp_server, clock=clock, idle_check_after=5, idle_limit=50)
    await pool.send(envelope("accept@a.example"))
    clock.advance(1)
    await pool.send(envelope("accept@a.example"))
    assert smtp_server.commands["NOOP"] == 0
    clock.advance(10)
    await pool.send(envelope("accept@a.example"))
    assert smtp_server.commands["NOOP"] == 1 and smtp_server.connections == 1
    clock.advance(100)
    await pool.send(envelope("accept@a.example"))
    assert smtp_server.commands["QUIT"] == 1 and smtp_server.connections == 2
    await pool.close()


async def test_close_quits_and_later_sends_are_transient(smtp_server: ScriptedSmtpServer) -> None:
    pool = pool_for(smtp_server)
    await pool.send(envelope("accept@a.example"))
    await pool.close()
    await pool.close()  # idempotent
    assert smtp_server.commands["QUIT"] == 1
    with pytest.raises(TransientSendError):
        await pool.send(envelope("accept@a.example"))


# ---------------------------------------------------------------- limits


async def test_never_more_than_max_per_domain_in_flight_to_one_domain() -> None:
    async with ScriptedSmtpServer(accept_delay=0.02) as server:
        pool = pool_for(server, config={"pool_size": 10, "max_per_domain": 2})
        rcpts = [f"accept+{i}@{domain}" for i in range(12) for domain in ("Gmail.example", "b.example", "c.example")]
        await asyncio.gather(*(pool.send(envelope(r)) for r in rcpts))
        await pool.close()
    assert len(server.accepted()) == 36
    assert server.most_in_flight == {"gmail.example": 2, "b.example": 2, "c.example": 2}
    assert server.most_open >= 4  # the other domains did go in parallel


async def test_rate_limit_paces_messages_per_server(smtp_server: ScriptedSmtpServer) -> None:
    """The server's rate becomes the waits its messages are given (on a frozen clock: each wait is
    where that message's token lies); the measured pace is bench/guards.py's."""
    rate, count = 40.0, 30
    time_ = FrozenTime()
    pool = pool_for(
        smtp_server, config={"rate_per_second": rate, "pool_size": 8}, clock=time_.monotonic, sleep=time_.sleep
    )
    await asyncio.gather(*(pool.send(envelope(f"accept+{i}@a{i}.example")) for i in range(count)))
    await pool.close()
    burst = max(1.0, rate / 20)
    assert len(smtp_server.accepted()) == count
    assert len(time_.sleeps) == count - burst  # all but the burst waited for a token
    assert max(time_.sleeps) == pytest.approx((count - burst) / rate)  # the last one 0.7 s: 40 a second


# ---------------------------------------------------------------- a message's trouble is not the server's


async def test_a_recipient_the_server_stalls_on_fails_alone_and_the_server_stays_up() -> None:
    async with ScriptedSmtpServer(slow_seconds=30) as server:
        pool = pool_for(server, config={"pool_size": 2}, timeouts=SmtpTimeouts(command=0.5))
        results = await asyncio.gather(
            pool.send(envelope("stall-data@slow.example")),
            *(pool.send(envelope(f"accept+{i}@a{i}.example")) for i in range(10)),
            return_exceptions=True,
        )
        status = pool.status()[0]
        await pool.close()
    stalled, rest = results[0], results[1:]
    assert isinstance(stalled, TransientSendError) and stalled.code == "stalled"
    assert all(isinstance(r, str) for r in rest) and len(server.accepted()) == 10
    assert status.up and status.failures == 0  # one recipient's stall is not a server failure


async def test_stalled_transactions_give_their_pool_slot_back() -> None:
    async with ScriptedSmtpServer(slow_seconds=30) as server:
        pool = pool_for(server, config={"pool_size": 2}, slow_after=0.2)
        stalls = [asyncio.create_task(pool.send(envelope(f"stall-data+{i}@slow.example"))) for i in range(2)]
        await asyncio.sleep(0)  # both take the pool's two slots first
        sent = await asyncio.gather(*(pool.send(envelope(f"accept+{i}@a{i}.example")) for i in range(10)))
        still_stalled = [not t.done() for t in stalls]
        for task in stalls:
            task.cancel()
        await asyncio.gather(*stalls, return_exceptions=True)
        await pool.close()
    assert len(sent) == 10 and len(server.accepted()) == 10
    assert still_stalled == [True, True]  # the ten went past the two stalled transactions


async def test_one_failure_event_escalates_the_backoff_once() -> None:
    async with ScriptedSmtpServer(greeting="421 4.3.2 busy") as server:
        pool = pool_for(server, config={"pool_size": 8}, backoff=Backoff(first=2, most=300), probe_every=60)
        results = await asyncio.gather(
            *(pool.send(envelope(f"accept+{i}@a{i}.example")) for i in range(8)), return_exceptions=True
        )
        status = pool.status()[0]
        await pool.close()
    assert all(isinstance(r, TransientSendError) for r in results)
    assert status.failures == 1 and 0 < status.down_for <= 2  # not 2 × 2^7 s for eight connections at once


async def test_a_server_back_from_a_421_blip_is_used_again_at_once_not_after_its_backoff() -> None:
    async with ScriptedSmtpServer(greeting="421 4.3.2 busy") as server:
        pool = pool_for(server, backoff=Backoff(first=300, most=300), probe_every=0.1)
        with pytest.raises(TransientSendError):
            await pool.send(envelope("accept@a.example"))
        assert not pool.status()[0].up  # down for 300 s, by its backoff
        server.greeting = "220 scripted.test ESMTP"  # the server is back
        for _ in range(200):  # the probe notices within a probe interval (at most 20 s here)
            if pool.status()[0].up:
                break
            await asyncio.sleep(0.1)
        assert pool.status()[0].up
        assert await pool.send(envelope("accept@a.example"))
        await pool.close()
    assert len(server.accepted()) == 1


# ---------------------------------------------------------------- every server down: hold, don't fail


async def test_a_message_waits_out_a_421_blip_and_goes_as_soon_as_the_server_is_back() -> None:
    async with ScriptedSmtpServer(greeting="421 4.3.2 busy") as server:
        pool = pool_for(server, backoff=Backoff(first=300, most=300), probe_every=0.1, hold_when_down=60)
        sending = asyncio.create_task(pool.send(envelope("accept@a.example")))
        for _ in range(200):  # the first attempt meets the 421: the server is marked down
            if not pool.status()[0].up:
                break
            await asyncio.sleep(0.01)
        assert not pool.status()[0].up and not sending.done()  # waiting for it, not failed
        server.greeting = "220 scripted.test ESMTP"  # back
        provider_id = await asyncio.wait_for(sending, 30)  # the probe brings it back: the message goes
        await pool.close()
    assert provider_id and len(server.accepted()) == 1


async def test_a_message_held_for_a_server_fails_as_transient_when_the_hold_ends() -> None:
    async with ScriptedSmtpServer(greeting="421 4.3.2 busy") as server:
        pool = pool_for(server, backoff=Backoff(first=300, most=300), probe_every=0.05, hold_when_down=0.3)
        with pytest.raises(TransientSendError) as caught:
            await pool.send(envelope("accept@a.example"))
        await pool.close()
    assert caught.value.code == 421 and caught.value.retry_after is not None and caught.value.retry_after > 200
    assert server.accepted() == []


async def test_closing_the_pool_releases_the_messages_held_for_a_server() -> None:
    async with ScriptedSmtpServer(greeting="421 4.3.2 busy") as server:
        pool = pool_for(server, backoff=Backoff(first=300, most=300), probe_every=60, hold_when_down=600)
        sending = asyncio.create_task(pool.send(envelope("accept@a.example")))
        for _ in range(200):
            if not pool.status()[0].up:
                break
            await asyncio.sleep(0.01)
        await pool.close()
        with pytest.raises(TransientSendError):
            await asyncio.wait_for(sending, 30)
