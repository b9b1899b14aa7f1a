"""SmtpConnection: the DATA payload (CRLF, dot-stuffing, the final dot) and where a send stood."""

from __future__ import annotations

import pytest
from aiosmtplib import SMTPDataError, SMTPRecipientRefused, SMTPServerDisconnected
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


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), min_size=1, max_size=30)
)
def test_unstuffing_gives_back_the_lines(lines: list[bytes]) -> None:
    payload = data_payload(b"".join(line + b"\r\n" for line in lines))
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
