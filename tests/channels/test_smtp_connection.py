"""SmtpConnection: the DATA payload (CRLF, dot-stuffing, the final dot), where a send stood, and
pipelining (MAIL, RCPT and DATA in one write) with the same stages and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiosmtplib import (
    SMTPDataError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from hypothesis import given
from hypothesis import strategies as st

from topslot.channels.smtp_connection import SmtpConnection, data_payload

from .scripted_smtp import ScriptedSmtpServer


def test_clean_message_only_gains_the_final_dot() -> None:
    assert data_payload(b"Subject: x\r\n\r\nbody\r\n") == b"Subject: x\r\n\r\nbody\r\n.\r\n"


def test_line_ends_are_normalised_and_a_last_line_end_added() -> None:
    assert data_payload(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n.\r\n"


def test_leading_dots_are_doubled() -> None:
    assert data_payload(b".a\r\n..b\r\n.\r\nc.d\r\n") == b"..a\r\n...b\r\n..\r\nc.d\r\n.\r\n"
    # with CRLF promised (the assembler's output) the dots are still doubled, and a last CRLF added
    assert data_payload(b".a\r\n..b\r\n.\r\nc.d", crlf=True) == b"..a\r\n...b\r\n..\r\nc.d\r\n.\r\n"


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), min_size=1, max_size=30),
    st.booleans(),
)
def test_unstuffing_gives_back_the_lines(lines: list[bytes], crlf: bool) -> None:
    payload = data_payload(b"".join(line + b"\r\n" for line in lines), crlf=crlf)  # CRLF: the promise holds
    body, end = payload[:-3], payload[-3:]
    assert end == b".\r\n"
    assert b"\r\n.\r\n" not in b"\r\n" + body  # no early end-of-data line
    received = body.split(b"\r\n")[:-1]
    assert [r[1:] if r.startswith(b".") else r for r in received] == lines


def test_an_empty_message_is_one_empty_line() -> None:
    assert data_payload(b"") == b"\r\n.\r\n"


# ---------------------------------------------------------------- stage tracking on a real server


async def connected(server: ScriptedSmtpServer, data_timeout: float = 5.0) -> SmtpConnection:
    conn = SmtpConnection(hostname="127.0.0.1", port=server.port, start_tls=False, timeout=5, data_timeout=data_timeout)
    await conn.connect()
    return conn


async def test_send_raw_reports_the_reply_and_keeps_the_session(smtp_server: ScriptedSmtpServer) -> None:
    conn = await connected(smtp_server)
    reply = await conn.send_raw("news@shop.example", "accept@a.example", b"Subject: x\r\n\r\nhi\r\n")
    assert (reply.code, reply.message, conn.stage) == (250, "2.0.0 Ok: queued as Q1", "after_dot")
    assert smtp_server.mail_commands == ["MAIL FROM:<news@shop.example> SIZE=18"]
    with pytest.raises(SMTPDataError) as refused:
        await conn.send_raw("news@shop.example", "data-550@a.example", b"x\r\n")
    assert refused.value.code == 550 and conn.stage == "after_dot"
    assert smtp_server.commands["RSET"] == 1 and conn.is_connected
    await conn.quit()


async def test_stage_tells_where_a_drop_happened(smtp_server: ScriptedSmtpServer) -> None:
    conn = await connected(smtp_server)
    with pytest.raises(SMTPRecipientRefused):
        await conn.send_raw("news@shop.example", "rcpt-421@a.example", b"x\r\n")
    assert conn.stage == "rcpt" and not conn.is_connected
    conn = await connected(smtp_server)
    with pytest.raises(SMTPServerDisconnected):
        await conn.sendmail("news@shop.example", ["drop-after-dot@a.example"], b"x\r\n")  # sendmail() too
    assert conn.stage == "after_dot" and not conn.is_connected


async def test_envelope_addresses_that_could_break_a_command_are_refused(smtp_server: ScriptedSmtpServer) -> None:
    conn = await connected(smtp_server)
    for bad in ("a@b.example>", "a b@example.com", "", "a@b.example\r\nRSET"):
        with pytest.raises(ValueError):
            await conn.send_raw("news@shop.example", bad, b"x\r\n")
    assert smtp_server.mail_commands == [] and conn.is_connected
    await conn.quit()


# ---------------------------------------------------------------- pipelining (RFC 2920)


@pytest.fixture(params=["separate replies", "replies in one segment"])
async def pipelining_server(request: pytest.FixtureRequest) -> AsyncIterator[ScriptedSmtpServer]:
    async with ScriptedSmtpServer(
        pipelining=True, coalesce=request.param == "replies in one segment", slow_seconds=1
    ) as server:
        yield server


async def test_a_pipelining_server_gets_mail_rcpt_and_data_in_one_write(pipelining_server: ScriptedSmtpServer) -> None:
    conn = await connected(pipelining_server)
    for k in range(3):
        reply = await conn.send_raw("news@shop.example", f"accept+{k}@a.example", b"Subject: x\r\n\r\n.hi\r\n")
        assert (reply.code, conn.stage) == (250, "after_dot")
    assert pipelining_server.pipelined == 3 and pipelining_server.commands["DATA"] == 3
    assert [r.data for r in pipelining_server.accepted()] == [b"Subject: x\r\n\r\n.hi\r\n"] * 3
    assert pipelining_server.mail_commands[0] == "MAIL FROM:<news@shop.example> SIZE=20"
    await conn.quit()


async def test_a_server_without_pipelining_gets_one_command_at_a_time(smtp_server: ScriptedSmtpServer) -> None:
    conn = await connected(smtp_server)
    await conn.send_raw("news@shop.example", "accept@a.example", b"x\r\n")
    assert smtp_server.pipelined == 0 and len(smtp_server.accepted()) == 1
    await conn.quit()


async def test_pipelined_refusals_raise_what_one_command_at_a_time_raises(
    pipelining_server: ScriptedSmtpServer,
) -> None:
    conn = await connected(pipelining_server)
    with pytest.raises(SMTPRecipientRefused) as refused:
        await conn.send_raw("news@shop.example", "hard-bounce@a.example", b"x\r\n")
    assert (refused.value.code, conn.stage, conn.is_connected) == (550, "rcpt", True)
    assert pipelining_server.commands["RSET"] == 1  # the DATA got its 503; the session is clean again
    pipelining_server.mail_reply = "553 5.7.1 Sender address rejected"
    with pytest.raises(SMTPSenderRefused) as refused_sender:
        await conn.send_raw("news@shop.example", "accept@a.example", b"x\r\n")
    assert (refused_sender.value.code, conn.stage, conn.is_connected) == (553, "mail", True)
    pipelining_server.mail_reply = None
    with pytest.raises(SMTPDataError) as refused_data:
        await conn.send_raw("news@shop.example", "data-550@a.example", b"x\r\n")
    assert (refused_data.value.code, conn.stage) == (550, "after_dot")
    reply = await conn.send_raw("news@shop.example", "accept@a.example", b"y\r\n")
    assert reply.code == 250 and [r.data for r in pipelining_server.accepted()] == [b"y\r\n"]
    await conn.quit()


async def test_pipelined_drops_and_stalls_keep_their_stage(pipelining_server: ScriptedSmtpServer) -> None:
    conn = await connected(pipelining_server)
    with pytest.raises(SMTPRecipientRefused) as closing:  # 421 to RCPT, then the server hangs up
        await conn.send_raw("news@shop.example", "rcpt-421@a.example", b"x\r\n")
    assert (closing.value.code, conn.stage, conn.is_connected) == (421, "rcpt", False)
    conn = await connected(pipelining_server)
    with pytest.raises(SMTPServerDisconnected):
        await conn.send_raw("news@shop.example", "drop-after-dot@a.example", b"x\r\n")
    assert (conn.stage, conn.is_connected) == ("after_dot", False)
    conn = await connected(pipelining_server)
    with pytest.raises(SMTPServerDisconnected):
        await conn.send_raw("news@shop.example", "drop-mid-body@a.example", b"x" * 4_000_000 + b"\r\n")
    assert (conn.stage, conn.is_connected) == ("body", False)
    conn = SmtpConnection(
        hostname="127.0.0.1", port=pipelining_server.port, start_tls=False, timeout=0.3, data_timeout=5
    )
    await conn.connect()
    with pytest.raises(SMTPReadTimeoutError):  # no 354 within the group's deadline: nothing of the body left
        await conn.send_raw("news@shop.example", "stall-data@a.example", b"x\r\n")
    # the stage is as far as the replies that came say: none came while the server held them (coalesce)
    assert (conn.stage, conn.is_connected) == ("mail" if pipelining_server.coalesce else "data", False)


@pytest.fixture(params=["one command at a time", "separate replies", "replies in one segment"])
async def any_server(request: pytest.FixtureRequest) -> AsyncIterator[ScriptedSmtpServer]:
    async with ScriptedSmtpServer(
        pipelining=request.param != "one command at a time", coalesce=request.param == "replies in one segment"
    ) as server:
        yield server


async def test_a_drop_after_the_rcpt_reply_is_before_the_body(any_server: ScriptedSmtpServer) -> None:
    """The server hangs up instead of answering DATA: stage ``data`` (nothing of the body left, safe
    to retry elsewhere), pipelined or not."""
    conn = await connected(any_server)
    with pytest.raises(SMTPServerDisconnected):
        await conn.send_raw("news@shop.example", "drop-at-data@a.example", b"x\r\n")
    assert (conn.stage, conn.is_connected, any_server.received) == ("data", False, [])
    conn = await connected(any_server)  # a fresh session sends as usual
    assert (await conn.send_raw("news@shop.example", "accept@a.example", b"x\r\n")).code == 250
    assert any_server.pipelined == (2 if any_server.pipelining else 0)
    await conn.quit()


async def test_a_reply_nothing_asked_for_ends_the_session_before_the_body(
    pipelining_server: ScriptedSmtpServer,
) -> None:
    # read as the reply to the final dot, it would record a message the server never took as accepted
    conn = await connected(pipelining_server)
    with pytest.raises(SMTPServerDisconnected):
        await conn.send_raw("news@shop.example", "extra-after-354@a.example", b"x\r\n")
    assert (conn.stage, conn.is_connected) == ("data", False)


async def test_a_reply_nothing_asked_for_after_the_final_reply_ends_the_session(any_server: ScriptedSmtpServer) -> None:
    # the message was accepted; the extra 250 would otherwise pass for the next transaction's reply
    conn = await connected(any_server)
    reply = await conn.send_raw("news@shop.example", "extra-after-dot@a.example", b"x\r\n")
    assert (reply.code, reply.message) == (250, "2.0.0 Ok: queued as Q1")
    assert (conn.stage, conn.is_connected) == ("after_dot", False)
    conn = await connected(any_server)
    assert (await conn.send_raw("news@shop.example", "accept@a.example", b"y\r\n")).message == "2.0.0 Ok: queued as Q2"
    await conn.quit()


async def test_the_final_reply_has_its_own_deadline(any_server: ScriptedSmtpServer) -> None:
    any_server.slow_seconds = 2.0
    conn = await connected(any_server, data_timeout=0.3)  # commands keep their 5 s
    with pytest.raises(SMTPReadTimeoutError):
        await conn.send_raw("news@shop.example", "slow-250@a.example", b"x\r\n")
    assert conn.stage == "after_dot" and not conn.is_connected  # ambiguous: the server may take it


@pytest.mark.parametrize("recipient", ["stall-data@a.example", "slow-250@a.example"])
@pytest.mark.parametrize("pipelining", [False, True], ids=["one command at a time", "pipelined"])
async def test_a_send_cancelled_while_a_reply_is_awaited_closes_the_session(recipient: str, pipelining: bool) -> None:
    """Cancelled while waiting for DATA's 354 (pipelined: the group still unanswered), or for the
    reply to the final dot: that reply would
    come later and be read as the next transaction's (a 354 turning its commands into a body, a 250
    recording a message nobody accepted as sent), so the session is closed, whatever the mode."""
    async with ScriptedSmtpServer(pipelining=pipelining, slow_seconds=1) as server:
        conn = await connected(server)
        send = asyncio.create_task(conn.send_raw("news@shop.example", recipient, b"x\r\n"))
        waited_for = "data" if recipient.startswith("stall") else "after_dot"
        while conn.stage != waited_for:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the reply is awaited now
        send.cancel()
        with pytest.raises(asyncio.CancelledError):
            await send
        assert not conn.is_connected
        if waited_for == "data":  # the 354 never came: nothing of the body left
            assert server.received == []
