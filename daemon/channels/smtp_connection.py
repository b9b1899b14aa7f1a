"""One SMTP connection that knows exactly where a failed send stood.

aiosmtplib's DATA step writes the body and the final dot, then reads the reply; a drop anywhere in
there raises the same ``SMTPServerDisconnected``. Whether the server may have accepted the message
depends on one fact: did the final ``.\\r\\n`` leave this process? ``SmtpConnection`` sends with
``send_raw()`` (MAIL, RCPT, DATA for one recipient; ``sendmail()`` works too, through the replaced
``data()``) and records in ``stage`` where a send stands: ``connect``, ``mail``, ``rcpt``, ``data``
(awaiting 354), then

- ``"body"``: the payload (which ends with the dot) is still partly in the transport's write buffer.
  A drop now cannot have delivered the message → safe to retry.
- ``"after_dot"``: the transport's buffer is empty, so the dot went to the kernel. A drop or timeout
  now is ambiguous: the server may have queued the message → never resend automatically.

The write-buffer high-water mark is set to 0 for the DATA write, so the protocol is paused while any
byte is buffered and resumed exactly when the buffer empties; a drop while paused means bytes (the
dot last of all) never left. Under TLS, "left" means handed to the TLS layer, so any error errs
towards ``after_dot`` (ambiguous), the safe side.

The reply to the final dot gets its own long timeout (RFC 5321 §4.5.3.2.6: 10 minutes); every
other command uses the connection's ordinary, short ``timeout``.

This relies on aiosmtplib 5.x protocol internals (``_command_lock``, ``_response_pending``,
``_drain_helper``, ``_paused``); tests/channels cover each of them against real servers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any, cast

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPException,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.typing import Default

from topslot.channels.base import handing_over
from topslot.channels.smtp_replies import Stage

_LONE_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOTS = re.compile(rb"(?m)^\.")
_BAD_ADDRESS = re.compile(rb"[\x00-\x20<>\x7f]")
START_INPUT = 354
COMPLETED = 250
FORWARDED = 251


def data_payload(message: bytes) -> bytes:
    """The bytes sent after DATA's 354: CRLF line ends, dot-stuffed (RFC 5321 §4.5.2), ending with
    the terminating ``.\\r\\n``."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _LONE_LINE_ENDS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if b"\n." in message or message.startswith(b"."):
        message = _LEADING_DOTS.sub(b"..", message)
    return message + b".\r\n"


class SmtpConnection(SMTP):
    """An ``aiosmtplib.SMTP`` that records the ``stage`` of each send and gives the reply to the
    final dot its own timeout (``data_timeout``)."""

    def __init__(self, *, data_timeout: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.data_timeout = data_timeout
        self.stage: Stage = "connect"
        self.last_used = 0.0  # monotonic seconds, set by the pool
        self.sent = 0

    async def send_raw(self, mail_from: str, rcpt_to: str, message: bytes, *, utf8: bool = False) -> SMTPResponse:
        """One transaction for one recipient: MAIL, RCPT, DATA with already-assembled bytes; RSET
        after a refusal. Like ``sendmail()`` without its per-message address parsing (an RFC 5322
        parser, ~20 % of the CPU per message): the envelope addresses are only checked for
        characters that could break the command line."""
        if self.protocol is None:
            raise SMTPServerDisconnected("Server not connected")
        if self.is_ehlo_or_helo_needed:
            self.stage = "connect"
            await self._ehlo_or_helo_if_needed()
        if utf8 and "smtputf8" not in self.esmtp_extensions:
            raise SMTPNotSupported("the server does not support SMTPUTF8 (non-ASCII addresses)")
        encoding = "utf-8" if utf8 else "ascii"
        sender, recipient = _envelope_address(mail_from, encoding), _envelope_address(rcpt_to, encoding)
        payload = data_payload(message)
        options = [b"SIZE=%d" % (len(payload) - 3)] if "size" in self.esmtp_extensions else []
        if utf8:
            options.append(b"SMTPUTF8")
        if not message.isascii() and "8bitmime" in self.esmtp_extensions:
            options.append(b"BODY=8BITMIME")
        try:
            self.stage = "mail"
            reply = await self.execute_command(b"MAIL", b"FROM:<" + sender + b">", *options)
            if reply.code != COMPLETED:
                raise SMTPSenderRefused(reply.code, reply.message, mail_from)
            self.stage = "rcpt"
            reply = await self.execute_command(b"RCPT", b"TO:<" + recipient + b">")
            if reply.code not in (COMPLETED, FORWARDED):
                raise SMTPRecipientRefused(reply.code, reply.message, rcpt_to)
            return await self._send_payload(payload)
        except (SMTPSenderRefused, SMTPRecipientRefused, SMTPDataError):
            await self._reset_quietly()
            raise

    async def _reset_quietly(self) -> None:
        if self.is_connected:
            try:
                await self.rset()
            except (SMTPException, ConnectionError, TimeoutError):
                pass

    async def connect(self, **kwargs: Any) -> SMTPResponse:
        self.stage = "connect"
        return await super().connect(**kwargs)

    async def mail(
        self,
        sender: str,
        /,
        *,
        options: Iterable[str] | None = None,
        encoding: str = "ascii",
        timeout: Any = Default.token,
    ) -> SMTPResponse:
        self.stage = "mail"
        return await super().mail(sender, options=options, encoding=encoding, timeout=timeout)

    async def rcpt(
        self,
        recipient: str,
        /,
        *,
        options: Iterable[str] | None = None,
        encoding: str = "ascii",
        timeout: Any = Default.token,
    ) -> SMTPResponse:
        self.stage = "rcpt"
        return await super().rcpt(recipient, options=options, encoding=encoding, timeout=timeout)

    async def data(self, message: str | bytes, /, *, timeout: Any = Default.token) -> SMTPResponse:
        command_timeout = self.timeout if timeout is Default.token else timeout
        payload = data_payload(message.encode("ascii") if isinstance(message, str) else message)
        return await self._send_payload(payload, command_timeout)

    async def _send_payload(self, payload: bytes, command_timeout: float | None = None) -> SMTPResponse:
        self.stage = "data"
        protocol = self.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        try:
            return await self._data(protocol, payload, self.timeout if command_timeout is None else command_timeout)
        except (SMTPServerDisconnected, SMTPReadTimeoutError, OSError, TimeoutError):
            self.close()
            raise

    async def _data(self, protocol: SMTPProtocol, payload: bytes, command_timeout: float | None) -> SMTPResponse:
        lock = protocol._command_lock
        if lock is None:
            raise SMTPServerDisconnected("Server not connected")
        async with lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=command_timeout)
            if start.code != START_INPUT:
                raise SMTPDataError(start.code, start.message)

            self.stage = "body"
            try:
                await handing_over()  # on record before the first byte of the body leaves
            except BaseException:
                self.close()  # the server waits for a body that will not come: this session is over
                raise
            transport = cast(asyncio.WriteTransport | None, protocol.transport)
            if transport is None:
                raise SMTPServerDisconnected("Connection lost")
            transport.set_write_buffer_limits(high=0)  # paused exactly while any byte is buffered
            try:
                protocol._response_pending = True
                protocol.write(payload)
                if transport.get_write_buffer_size():
                    await self._until_written(protocol)
            finally:
                if not transport.is_closing():
                    transport.set_write_buffer_limits()  # back to the defaults
            self.stage = "after_dot"
            reply = await protocol.read_response(timeout=self.data_timeout)
            if reply.code != COMPLETED:
                raise SMTPDataError(reply.code, reply.message)
            return reply

    async def _until_written(self, protocol: SMTPProtocol) -> None:
        """Wait until the write buffer is empty (the final dot left); raise if the connection is
        lost or the data timeout passes first."""
        try:
            await asyncio.wait_for(protocol._drain_helper(), self.data_timeout)
        except TimeoutError as exc:
            raise SMTPServerDisconnected("Timed out writing the message body") from exc
        except OSError as exc:
            raise SMTPServerDisconnected(f"Connection lost while writing the message body: {exc}") from exc
        if protocol._paused:  # lost while bytes were still buffered (a clean EOF wakes us too)
            raise SMTPServerDisconnected("Connection lost while writing the message body")


def _envelope_address(address: str, encoding: str) -> bytes:
    """The address for MAIL FROM / RCPT TO; ValueError if it is empty or could break the command."""
    raw = address.encode(encoding)
    if not raw or _BAD_ADDRESS.search(raw):
        raise ValueError(f"unusable envelope address {address!r}")
    return raw
