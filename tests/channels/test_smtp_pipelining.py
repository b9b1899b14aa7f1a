"""Pipelining (RFC 2920) against aiosmtpd, an independent SMTP implementation in its own thread.

aiosmtpd reads commands line by line, so it serves a pipelined client; it does not advertise
PIPELINING itself, so its EHLO hook adds the keyword when the test asks for it. Every scenario runs
with and without the keyword, and must end the same way: the same message bytes arrive, a refused
sender or recipient raises the same exception with the same code and ``stage`` (so
``smtp_replies`` classifies it the same), and the connection stays usable for the next message.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING
from aiosmtplib import SMTPRecipientRefused, SMTPSenderRefused

from topslot.channels.smtp_connection import PipeliningProtocol, SmtpConnection

from .scripted_smtp import unused_port

REFUSALS = {  # the local part of an address → the reply aiosmtpd gives it
    "busy": "451 4.3.0 Try again later",
    "blocked": "553 5.7.1 Sender address rejected",
    "greylist": "451 4.7.1 Greylisted, try again later",
    "unknown": "550 5.1.1 User unknown",
}


class Handler:
    """Refuses the senders and recipients named in ``REFUSALS``, records what arrives, and counts
    the MAIL commands that came with their RCPT and DATA already buffered behind them."""

    def __init__(self, pipelining: bool):
        self.pipelining = pipelining
        self.messages: list[tuple[str, list[str], bytes, list[str]]] = []
        self.commands: Counter[str] = Counter()
        self.pipelined = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> Any:
        self.commands["MAIL"] += 1
        if b"DATA\r\n" in server._reader._buffer:
            self.pipelined += 1
        return REFUSALS.get(address.partition("@")[0], MISSING)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> Any:
        self.commands["RCPT"] += 1
        return REFUSALS.get(address.partition("@")[0], MISSING)

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> Any:
        self.commands["RSET"] += 1
        return MISSING

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.original_content, envelope.mail_options))
        return f"250 2.0.0 Ok: queued as A{len(self.messages)}"


@pytest.fixture(params=[True, False], ids=["pipelining", "one command at a time"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[Controller, Handler]]:
    handler = Handler(pipelining=request.param)
    controller = Controller(handler, hostname="127.0.0.1", port=unused_port())
    controller.start()
    yield controller, handler
    controller.stop()


async def connected(port: int, **kwargs: Any) -> SmtpConnection:
    conn = SmtpConnection(hostname="127.0.0.1", port=port, start_tls=False, timeout=5, data_timeout=5, **kwargs)
    await conn.connect()
    await conn.ehlo()
    assert isinstance(conn.protocol, PipeliningProtocol)
    return conn


MESSAGES = [
    b"From: Shop <news@shop.example>\r\nSubject: plain\r\n\r\nhello\r\n",
    b"From: Shop <news@shop.example>\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n",
    "From: Shop <news@shop.example>\r\nSubject: =?utf-8?q?F=C3=AAte?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nBonne fête, Zoë ✓\r\n".encode()
    + (b"x" * 70 + b"\r\n") * 3000,
]


async def test_messages_arrive_byte_identical(server: tuple[Controller, Handler]) -> None:
    controller, handler = server
    conn = await connected(controller.port)
    assert ("pipelining" in conn.esmtp_extensions) is handler.pipelining
    for k, message in enumerate(MESSAGES):
        reply = await conn.send_raw("news@shop.example", f"someone+{k}@a.example", message)
        assert (reply.code, reply.message, conn.stage) == (250, f"2.0.0 Ok: queued as A{k + 1}", "after_dot")
    await conn.quit()
    assert [m[2] for m in handler.messages] == MESSAGES
    assert [m[:2] for m in handler.messages] == [("news@shop.example", [f"someone+{k}@a.example"]) for k in range(3)]
    assert handler.messages[2][3] == [f"SIZE={len(MESSAGES[2])}", "BODY=8BITMIME"]
    parsed = email.message_from_bytes(handler.messages[2][2], policy=email.policy.default)
    assert parsed["Subject"] == "Fête" and parsed.get_content().startswith("Bonne fête, Zoë ✓\r\n")
    assert handler.pipelined == (3 if handler.pipelining else 0)


@pytest.mark.parametrize(
    ("sender", "recipient", "refusal", "code", "stage"),
    [
        ("busy@shop.example", "someone@a.example", SMTPSenderRefused, 451, "mail"),
        ("blocked@shop.example", "someone@a.example", SMTPSenderRefused, 553, "mail"),
        ("news@shop.example", "greylist@a.example", SMTPRecipientRefused, 451, "rcpt"),
        ("news@shop.example", "unknown@a.example", SMTPRecipientRefused, 550, "rcpt"),
    ],
)
async def test_refusals_end_the_same_pipelined_or_not(
    server: tuple[Controller, Handler], sender: str, recipient: str, refusal: type[Exception], code: int, stage: str
) -> None:
    controller, handler = server
    conn = await connected(controller.port)
    for _ in range(2):  # the refused transaction is reset: the session is as good as new
        with pytest.raises(refusal) as refused:
            await conn.send_raw(sender, recipient, b"Subject: x\r\n\r\nrefused\r\n")
        assert (refused.value.code, conn.stage, conn.is_connected) == (code, stage, True)  # type: ignore[attr-defined]
        reply = await conn.send_raw("news@shop.example", "someone@a.example", b"Subject: x\r\n\r\nnext\r\n")
        assert (reply.code, conn.stage) == (250, "after_dot")
    await conn.quit()
    assert [m[2] for m in handler.messages] == [b"Subject: x\r\n\r\nnext\r\n"] * 2
    assert handler.commands["RSET"] == 2
    # after a refused MAIL, a pipelined RCPT gets aiosmtpd's own 503 (need MAIL), so no handler sees it
    assert handler.commands["RCPT"] == 2 + (2 if stage == "rcpt" else 0)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_pipelining_after_starttls(certificate: tuple[Path, Path]) -> None:
    """STARTTLS keeps the connection's protocol (the TLS layer goes under it), so a pipelined group
    still has every reply queued; the keyword is read from the EHLO after the upgrade."""
    handler = Handler(pipelining=True)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*map(str, certificate))
    controller = Controller(
        handler, hostname="127.0.0.1", port=unused_port(), tls_context=server_context, require_starttls=True
    )
    controller.start()
    try:
        conn = SmtpConnection(
            hostname="127.0.0.1",
            port=controller.port,
            start_tls=True,
            tls_context=ssl.create_default_context(cafile=str(certificate[0])),
            timeout=5,
            data_timeout=5,
        )
        await conn.connect()  # greeting, EHLO, STARTTLS; the EHLO over TLS is ours to send
        await conn.ehlo()
        assert isinstance(conn.protocol, PipeliningProtocol) and "pipelining" in conn.esmtp_extensions
        for message in MESSAGES:
            assert (await conn.send_raw("news@shop.example", "someone@a.example", message)).code == 250
        with pytest.raises(SMTPRecipientRefused):
            await conn.send_raw("news@shop.example", "unknown@a.example", b"x\r\n")
        assert (await conn.send_raw("news@shop.example", "someone@a.example", b"y\r\n")).code == 250
        await conn.quit()
    finally:
        controller.stop()
    assert [m[2] for m in handler.messages] == [*MESSAGES, b"y\r\n"] and handler.pipelined == 5
