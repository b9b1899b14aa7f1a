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

**Pipelining** (RFC 2920). When the server advertises ``PIPELINING``, ``send_raw`` writes MAIL, RCPT
and DATA in one write and reads their three replies under one deadline (``timeout``), instead of
three command round trips; the body still waits for the 354, its hand-over and everything after it
are unchanged. The stages and errors are the unpipelined ones: ``stage`` moves to ``rcpt`` once MAIL
was accepted and to ``data`` once RCPT was, a refused MAIL or RCPT raises ``SMTPSenderRefused`` /
``SMTPRecipientRefused`` once the replies of the group are read (the server answers the DATA after
them with a 503/554; a server that answers it with 354 anyway gets no body: the session is closed,
nothing can have been delivered), a 421 closes the session, and a timeout or a drop while the group
is unanswered closes it too (nothing of the body left: safe to retry; a 354 still on its way would
turn the next transaction's commands into a body). A send cancelled at any point, pipelined or not,
closes the session: a reply still on its way would pass for the next transaction's. aiosmtplib's
protocol keeps at most one parsed reply and drops data that arrives while that one awaits pickup, so
the replies of a group, which may come in any number of TCP segments, are read by
``PipeliningProtocol``: its own queue of complete replies while a group is outstanding, aiosmtplib's
behaviour otherwise.

This relies on aiosmtplib 5.x internals: the protocol's ``_command_lock``, ``_response_pending``,
``_buffer``, ``_read_response_from_buffer``, ``_loop``, ``_drain_helper``, ``_paused``, what its
``data_received`` / ``eof_received`` / ``connection_lost`` do (``PipeliningProtocol`` overrides them),
``aiosmtplib.protocol.MAX_RESPONSE_LENGTH``, and the module name ``aiosmtplib.smtp.SMTPProtocol`` that
``SMTP._create_connection`` builds its protocol from (``start_tls`` keeps that protocol under the TLS
layer). tests/channels cover each of them against real servers (the scripted one and aiosmtpd, with
and without STARTTLS), and pyproject pins aiosmtplib's minor version.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import aiosmtplib.smtp
from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPException,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from aiosmtplib.protocol import MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.typing import Default

from topslot.channels.base import handing_over
from topslot.channels.smtp_replies import Stage

_LONE_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOTS = re.compile(rb"(?m)^\.")
_BAD_ADDRESS = re.compile(rb"[\x00-\x20<>\x7f]")
START_INPUT = 354
COMPLETED = 250
FORWARDED = 251
CLOSING = 421
INVALID_RESPONSE = -1  # aiosmtplib's code for a reply it cannot read


def data_payload(message: bytes, *, crlf: bool = False) -> bytes:
    """The bytes sent after DATA's 354: CRLF line ends, dot-stuffed (RFC 5321 §4.5.2), ending with
    the terminating ``.\\r\\n``. ``crlf``: the caller guarantees CRLF line ends already (no bare CR
    or LF), so the message is not scanned for them (three passes: ~15 µs for a 7 KB message)."""
    if not crlf:
        pairs = message.count(b"\r\n")
        if message.count(b"\n") != pairs or message.count(b"\r") != pairs:
            message = _LONE_LINE_ENDS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if b"\n." in message or message.startswith(b"."):
        message = _LEADING_DOTS.sub(b"..", message)
    return message + b".\r\n"


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, plus a queue for the replies of a group of commands (a pipelined
    MAIL, RCPT and DATA; the body's final dot): between ``start_group()`` and ``end_group()`` every
    complete reply that arrives is kept, in order, for ``group_reply()``, under one deadline
    (``group_deadline``: one timer, not an ``asyncio.timeout`` or a ``wait_for`` per reply, ~10 µs
    less a message); outside a group it behaves exactly as ``SMTPProtocol``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._group: deque[SMTPResponse] | None = None
        self._group_waiter: asyncio.Future[None] | None = None
        self._group_error: BaseException | None = None
        self._group_timer: asyncio.TimerHandle | None = None

    def start_group(self) -> None:
        """Keep the replies that arrive from now on (call it before writing the group)."""
        self._group, self._group_error, self._group_waiter = deque(), None, None

    def group_deadline(self, timeout: float | None) -> None:
        """From ``timeout`` seconds on (None: never), ``group_reply`` raises ``TimeoutError`` once
        the replies received are taken. Replaces the group's earlier deadline."""
        if self._group_timer is not None:
            self._group_timer.cancel()
        self._group_timer = None if timeout is None else self._loop.call_later(timeout, self._group_timed_out)

    def end_group(self) -> None:
        """Back to aiosmtplib's one-reply-per-command reading, no deadline. Idempotent."""
        self._group, self._group_waiter = None, None
        if self._group_timer is not None:
            self._group_timer.cancel()
            self._group_timer = None

    def group_left(self) -> bool:
        """Whether anything arrived beyond the replies taken (a complete reply, or bytes of one)."""
        return bool(self._group) or bool(self._buffer)

    async def group_reply(self) -> SMTPResponse:
        """The group's next reply, in order; once the received ones are taken, the connection's
        failure (``SMTPServerDisconnected``, an unreadable reply) if it failed. Bound it with a deadline."""
        assert self._group is not None, "start_group() first"
        while not self._group:
            if self._group_error is not None:
                raise self._group_error
            self._group_waiter = self._loop.create_future()
            await self._group_waiter
        return self._group.popleft()

    def data_received(self, data: bytes) -> None:
        group = self._group
        if group is None:
            super().data_received(data)
            return
        self._buffer.extend(data)
        if len(self._buffer) > MAX_RESPONSE_LENGTH:
            del self._buffer[:]
            self._fail_group(SMTPResponseException(INVALID_RESPONSE, "Response too long"))
            return
        try:
            while (reply := self._read_response_from_buffer()) is not None:
                group.append(reply)
        except SMTPResponseException as exc:
            self._fail_group(exc)
            return
        self._wake_group()

    def eof_received(self) -> bool:
        self._fail_group(SMTPServerDisconnected("Unexpected EOF received"))
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_group(SMTPServerDisconnected("Connection lost"))
        super().connection_lost(exc)

    def _group_timed_out(self) -> None:
        self._group_timer = None
        self._fail_group(TimeoutError("no reply within the deadline"))

    def _fail_group(self, exc: BaseException) -> None:
        if self._group is not None and self._group_error is None:
            self._group_error = exc
            self._wake_group()

    def _wake_group(self) -> None:
        waiter = self._group_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class SmtpConnection(SMTP):
    """An ``aiosmtplib.SMTP`` that records the ``stage`` of each send and gives the reply to the
    final dot its own timeout (``data_timeout``)."""

    def __init__(self, *, data_timeout: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.data_timeout = data_timeout
        self.stage: Stage = "connect"
        self.last_used = 0.0  # monotonic seconds, set by the pool
        self.sent = 0

    async def send_raw(
        self, mail_from: str, rcpt_to: str, message: bytes, *, utf8: bool = False, crlf: bool = False
    ) -> SMTPResponse:
        """One transaction for one recipient: MAIL, RCPT, DATA with already-assembled bytes; RSET
        after a refusal. Like ``sendmail()`` without its per-message address parsing (an RFC 5322
        parser, ~20 % of the CPU per message): the envelope addresses are only checked for
        characters that could break the command line. ``crlf``: ``message`` has CRLF line ends only
        (``data_payload``)."""
        if self.protocol is None:
            raise SMTPServerDisconnected("Server not connected")
        try:
            return await self._send_raw(mail_from, rcpt_to, message, utf8, crlf)
        except asyncio.CancelledError:
            # a reply may still be on its way (EHLO's, a 354, the final dot's 250): read later, it would
            # pass for the next transaction's (a 354 turning its commands into a body, a 250 recording
            # a message as sent): this session is over
            self.close()
            raise

    async def _send_raw(self, mail_from: str, rcpt_to: str, message: bytes, utf8: bool, crlf: bool) -> SMTPResponse:
        if self.is_ehlo_or_helo_needed:
            self.stage = "connect"
            await self._ehlo_or_helo_if_needed()
        if utf8 and "smtputf8" not in self.esmtp_extensions:
            raise SMTPNotSupported("the server does not support SMTPUTF8 (non-ASCII addresses)")
        encoding = "utf-8" if utf8 else "ascii"
        sender, recipient = _envelope_address(mail_from, encoding), _envelope_address(rcpt_to, encoding)
        payload = data_payload(message, crlf=crlf)
        options = [b"SIZE=%d" % (len(payload) - 3)] if "size" in self.esmtp_extensions else []
        if utf8:
            options.append(b"SMTPUTF8")
        if not message.isascii() and "8bitmime" in self.esmtp_extensions:
            options.append(b"BODY=8BITMIME")
        mail = b" ".join((b"MAIL FROM:<" + sender + b">", *options))
        rcpt = b"RCPT TO:<" + recipient + b">"
        try:
            protocol = self.protocol
            if isinstance(protocol, PipeliningProtocol) and "pipelining" in self.esmtp_extensions:
                return await self._send_pipelined(protocol, mail, rcpt, payload, mail_from, rcpt_to)
            self.stage = "mail"
            reply = await self.execute_command(mail)
            if reply.code != COMPLETED:
                raise SMTPSenderRefused(reply.code, reply.message, mail_from)
            self.stage = "rcpt"
            reply = await self.execute_command(rcpt)
            if reply.code not in (COMPLETED, FORWARDED):
                raise SMTPRecipientRefused(reply.code, reply.message, rcpt_to)
            return await self._send_payload(payload)
        except (SMTPSenderRefused, SMTPRecipientRefused, SMTPDataError):
            await self._reset_quietly()
            raise

    async def _send_pipelined(
        self, protocol: PipeliningProtocol, mail: bytes, rcpt: bytes, payload: bytes, mail_from: str, rcpt_to: str
    ) -> SMTPResponse:
        """MAIL, RCPT and DATA in one write, their replies under one deadline, then the body (the
        module docstring says what each failure means)."""
        lock = protocol._command_lock
        if lock is None:
            raise SMTPServerDisconnected("Server not connected")
        async with lock:
            self.stage = "mail"
            refusal: SMTPException | None = None
            protocol.start_group()
            try:
                protocol.group_deadline(self.timeout)
                protocol.write(mail + b"\r\n" + rcpt + b"\r\nDATA\r\n")
                reply = await protocol.group_reply()
                if reply.code != COMPLETED:
                    refusal = SMTPSenderRefused(reply.code, reply.message, mail_from)
                else:
                    self.stage = "rcpt"
                reply = await protocol.group_reply()
                if refusal is None and reply.code not in (COMPLETED, FORWARDED):
                    refusal = SMTPRecipientRefused(reply.code, reply.message, rcpt_to)
                elif refusal is None:
                    self.stage = "data"
                start = await protocol.group_reply()
                if protocol.group_left():  # more than three replies: a later one would pass for the dot's
                    raise SMTPServerDisconnected("the server sent replies nothing asked for")
            except (SMTPServerDisconnected, SMTPResponseException, OSError, TimeoutError) as exc:
                self.close()  # replies may still be on their way: this session cannot be trusted
                if refusal is not None:
                    raise refusal from None  # e.g. a 421 to RCPT, then the server hung up
                if isinstance(exc, TimeoutError):
                    raise SMTPReadTimeoutError("Timed out waiting for server response") from exc
                raise
            finally:  # cancelled meanwhile: ``send_raw`` closes the session
                protocol.end_group()
            if refusal is not None or start.code != START_INPUT:
                if start.code == START_INPUT or CLOSING in (start.code, getattr(refusal, "code", 0)):
                    self.close()  # no body for a refused envelope; or the server is closing
                raise refusal or SMTPDataError(start.code, start.message)
            try:
                return await self._send_body(protocol, payload)
            except (SMTPServerDisconnected, SMTPReadTimeoutError, OSError, TimeoutError):
                self.close()
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

    async def _create_connection(self, timeout: float | None) -> SMTPResponse:
        # aiosmtplib builds the protocol here, by the name ``SMTPProtocol`` of its smtp module, before
        # its first await; meanwhile that name means ``PipeliningProtocol``, which behaves as
        # aiosmtplib's own until a group is started (so another client connecting meanwhile is unaffected).
        aiosmtplib.smtp.SMTPProtocol = PipeliningProtocol  # type: ignore[misc]
        try:
            return await super()._create_connection(timeout)
        finally:
            aiosmtplib.smtp.SMTPProtocol = SMTPProtocol  # type: ignore[misc]

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
            return await self._send_body(protocol, payload)

    async def _send_body(self, protocol: SMTPProtocol, payload: bytes) -> SMTPResponse:
        """After the 354: the hand-over on record, the payload out (``body`` until the write buffer
        is empty, then ``after_dot``), the final reply within ``data_timeout`` (read as a group of
        one, so a reply nothing asked for that comes with it closes the session instead of passing
        for the next command's). Under the command lock."""
        if not isinstance(protocol, PipeliningProtocol):  # only ever built by ``_create_connection``
            raise SMTPServerDisconnected("not a connection of SmtpConnection's own")
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
        protocol.start_group()  # an early reply (a 552 mid-body) is kept for the read below
        try:
            try:
                protocol.write(payload)
                if transport.get_write_buffer_size():
                    await self._until_written(protocol)
            finally:
                if not transport.is_closing():
                    transport.set_write_buffer_limits()  # back to the defaults
            self.stage = "after_dot"
            protocol.group_deadline(self.data_timeout)
            try:
                reply = await protocol.group_reply()
            except TimeoutError as exc:
                raise SMTPReadTimeoutError("Timed out waiting for server response") from exc
            if protocol.group_left():  # a later reply would pass for the next transaction's
                self.close()
        finally:
            protocol.end_group()
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
