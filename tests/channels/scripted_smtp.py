"""A real SMTP server on 127.0.0.1 (asyncio TCP) whose answers follow a script, for transport tests.

aiosmtpd cannot drop a connection mid-body or after the final dot, so this small server speaks
enough SMTP (EHLO/HELO/MAIL/RCPT/DATA/RSET/NOOP/QUIT, dot-unstuffing) and picks its behaviour from
the recipient's local part up to the first ``+`` (``hard-bounce+7@example.com`` → ``hard-bounce``):

=================  ===========================================================================
accept             250 at every step; the final reply is ``250 2.0.0 Ok: queued as Q<n>``
greylist           RCPT answers ``451 4.7.1`` the first time per address, then 250
hard-bounce        RCPT answers ``550 5.1.1 ... User unknown``
unknown-plain      RCPT answers ``550 No such user here`` (no enhanced code)
mailbox-full       RCPT answers ``552 5.2.2 Mailbox full``
rcpt-421           RCPT answers ``421 4.3.2 Service shutting down`` and closes
rcpt-421-once      like rcpt-421 the first time per address, then 250
data-451           the final reply is ``451 4.3.0 Try again later``
data-550           the final reply is ``550 5.1.1 User unknown``
data-spam          the final reply is ``554 5.7.1 Message rejected as spam``
drop-mid-body      reads 64 KiB of the body, stops reading, then resets the connection
drop-after-dot     reads the whole body, then closes without replying
slow-250           reads the whole body, waits ``slow_seconds``, then answers 250 (the message is
                   recorded as accepted)
extra-after-354    DATA's 354 comes with a 250 nobody asked for in the same write (a broken server)
extra-after-dot    the final 250 comes with another 250 nobody asked for in the same write
stall-data         DATA waits ``slow_seconds`` before its 354 (a server stalling on one recipient)
drop-at-data       RCPT answers 250; DATA gets no reply: the server closes the connection
=================  ===========================================================================

Server-wide knobs: ``greeting`` (e.g. ``"421 busy"`` refuses every session; it may be changed while
the server runs, for a blip), ``pipelining`` (advertise PIPELINING, RFC 2920: commands are read one
line at a time anyway), ``coalesce`` (hold the replies to MAIL and RCPT and write them with the next
reply, so a pipelined group's replies arrive in one segment), ``mail_reply`` and
``rcpt_reply`` (a fixed reply to every MAIL FROM / RCPT TO; a 421 closes), ``accept_delay``
(seconds before each final 250, so messages overlap), ``receive_buffer`` (SO_RCVBUF), ``eight_bit_mime``
(advertise 8BITMIME; default on).

It measures what the tests assert on: connections seen, most connections open at once, most
transactions in flight per recipient domain, every message received (the ambiguous ones too).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

BODY_PEEK = 64 * 1024
LINE_LIMIT = 1 << 20


@dataclass
class Received:
    connection: int
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    replied: str  # the final reply sent ("" when none was)
    at: float = field(default_factory=time.monotonic)  # when the body had arrived


@dataclass
class _Session:
    id: int
    mail_from: str = ""
    in_transaction: bool = False  # a MAIL FROM was accepted (RCPT needs one: RFC 5321 §4.1.4)
    rcpt_to: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)


def behaviour_of(address: str) -> str:
    return address.partition("@")[0].partition("+")[0].lower()


def unused_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScriptedSmtpServer:
    def __init__(
        self,
        *,
        greeting: str = "220 scripted.test ESMTP",
        mail_reply: str | None = None,
        rcpt_reply: str | None = None,
        accept_delay: float = 0.0,
        slow_seconds: float = 2.0,
        receive_buffer: int | None = None,
        pipelining: bool = False,
        coalesce: bool = False,
        eight_bit_mime: bool = True,
    ):
        self.greeting = greeting
        self.pipelining = pipelining
        self.coalesce = coalesce
        self.eight_bit_mime = eight_bit_mime
        self.mail_reply = mail_reply
        self.rcpt_reply = rcpt_reply
        self.accept_delay = accept_delay
        self.slow_seconds = slow_seconds
        self.receive_buffer = receive_buffer
        self.port = 0
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.received: list[Received] = []
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.mail_commands: list[str] = []
        self.pipelined = 0  # MAIL commands that came with their RCPT and DATA already buffered behind them
        self._writers: set[asyncio.StreamWriter] = set()
        self._seen: Counter[tuple[str, str]] = Counter()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedSmtpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock, limit=LINE_LIMIT)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def reset_all(self) -> None:
        """Reset every open session at once (a server restart, or its idle timeout)."""
        for writer in list(self._writers):
            writer.transport.abort()

    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.replied.startswith("250")]

    # ------------------------------------------------------------ one session

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        session = _Session(self.connections)
        self._writers.add(writer)
        try:
            await self._converse(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._end_transaction(session)
            self._writers.discard(writer)
            self.open_now -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _converse(self, s: _Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: list[bytes] = []

        async def reply(text: str) -> None:
            held.append(text.encode() + b"\r\n")
            if self.coalesce and verb in ("MAIL", "RCPT") and not text.startswith("421"):
                return  # written with the next reply
            writer.write(b"".join(held))
            held.clear()
            await writer.drain()

        verb = ""

        await reply(self.greeting)
        if not self.greeting.startswith("2"):
            return
        while True:
            line = await reader.readline()
            if not line:
                return
            command = line.decode("utf-8", "replace").strip()
            verb = command[:4].upper()
            self.commands[verb] += 1
            if verb == "EHLO":
                eight_bit = "250-8BITMIME\r\n" if self.eight_bit_mime else ""
                await reply(
                    f"250-scripted.test\r\n{eight_bit}250-SMTPUTF8\r\n250-SIZE 104857600\r\n"
                    + ("250-PIPELINING\r\n" if self.pipelining else "")
                    + "250 ENHANCEDSTATUSCODES"
                )
            elif verb == "HELO":
                await reply("250 scripted.test")
            elif verb == "MAIL":
                if b"DATA\r\n" in reader._buffer:  # type: ignore[attr-defined]
                    self.pipelined += 1
                if self.mail_reply:
                    await reply(self.mail_reply)
                    continue
                self.mail_commands.append(command)
                s.mail_from, s.in_transaction = _address(command), True
                await reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                if not s.in_transaction:
                    await reply("503 5.5.1 Error: need MAIL command")
                    continue
                if not await self._rcpt(s, _address(command), reply):
                    writer.close()
                    return
            elif verb == "DATA":
                if not s.rcpt_to:
                    await reply("503 5.5.1 Error: need RCPT command")
                    continue
                if behaviour_of(s.rcpt_to[0]) == "drop-at-data":
                    writer.write(b"".join(held))  # the replies held so far (coalesce) go out, then it hangs up
                    return
                if not await self._data(s, reader, writer, reply):
                    return
            elif verb == "RSET":
                self._end_transaction(s)
                await reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                await reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                await reply("221 2.0.0 Bye")
                return
            else:
                await reply("502 5.5.2 Error: command not recognized")

    async def _rcpt(self, s: _Session, address: str, reply) -> bool:  # type: ignore[no-untyped-def]
        kind = behaviour_of(address)
        self._seen[(kind, address)] += 1
        first = self._seen[(kind, address)] == 1
        if self.rcpt_reply:
            await reply(self.rcpt_reply)
            return not self.rcpt_reply.startswith("421")
        if kind == "greylist" and first:
            await reply(f"451 4.7.1 <{address}>: Recipient address rejected: Greylisted, try again later")
        elif kind == "hard-bounce":
            await reply(f"550 5.1.1 <{address}>: Recipient address rejected: User unknown")
        elif kind == "unknown-plain":
            await reply("550 No such user here")
        elif kind == "mailbox-full":
            await reply("552 5.2.2 Mailbox full")
        elif kind == "rcpt-421" or (kind == "rcpt-421-once" and first):
            await reply("421 4.3.2 Service shutting down, closing transmission channel")
            return False
        else:
            s.rcpt_to.append(address)
            domain = address.rpartition("@")[2].lower()
            s.domains.append(domain)
            self.in_flight[domain] += 1
            self.most_in_flight[domain] = max(self.most_in_flight[domain], self.in_flight[domain])
            await reply("250 2.1.5 Ok")
        return True

    async def _data(self, s: _Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply) -> bool:  # type: ignore[no-untyped-def]
        kind = behaviour_of(s.rcpt_to[0])
        if kind == "stall-data":
            await asyncio.sleep(self.slow_seconds)
        if kind == "extra-after-354":  # a broken server: a reply nothing asked for, right behind the 354
            await reply("354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as NOTHING")
        else:
            await reply("354 End data with <CR><LF>.<CR><LF>")
        if kind == "drop-mid-body":
            await reader.readexactly(BODY_PEEK)
            writer.transport.abort()  # unread data in our buffers: the peer sees a reset
            return False
        lines: list[bytes] = []
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed mid-body")
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        message = Received(s.id, s.mail_from, list(s.rcpt_to), b"".join(lines), "")
        self.received.append(message)
        if kind == "drop-after-dot":
            return False
        if kind == "slow-250":
            await asyncio.sleep(self.slow_seconds)
        elif self.accept_delay:
            await asyncio.sleep(self.accept_delay)
        message.replied = {
            "data-451": "451 4.3.0 Try again later",
            "data-550": "550 5.1.1 User unknown",
            "data-spam": "554 5.7.1 Message rejected as spam",
        }.get(kind, f"250 2.0.0 Ok: queued as Q{len(self.received)}")
        self._end_transaction(s)
        if kind == "extra-after-dot":  # a broken server: a reply nothing asked for, right behind the 250
            await reply(message.replied + "\r\n250 2.0.0 Ok: queued as NOTHING")
            return True
        await reply(message.replied)
        return True

    def _end_transaction(self, s: _Session) -> None:
        for domain in s.domains:
            self.in_flight[domain] -= 1
        s.domains.clear()
        s.rcpt_to.clear()
        s.mail_from = ""
        s.in_transaction = False


def _address(command: str) -> str:
    start, end = command.find("<"), command.rfind(">")
    return command[start + 1 : end] if 0 <= start < end else command.partition(":")[2].strip()
