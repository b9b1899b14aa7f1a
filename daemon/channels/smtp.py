"""SMTP delivery: a pool of persistent aiosmtplib connections per configured server, with failover,
a smooth rate limit per server, a concurrency limit per receiving domain, and exact error kinds.

``SmtpPool.send(envelope)`` hands one pre-built message over (MAIL, RCPT, DATA with the bytes as
they are: never a message object; see ``SmtpConnection.send_raw``; 8bit parts re-encoded by
``topslot.rendering.mime.seven_bit`` for a server that does not advertise 8BITMIME) and returns the
server's id for it, or raises:

- ``TransientSendError``: not accepted, safe to retry (4xx; every server down or unreachable;
  connection lost before the final dot left this process);
- ``PermanentSendError``: refused (5xx), ``suppress=True`` for hard bounces (see smtp_replies);
- ``AmbiguousSendError``: the final dot was sent but no reply came (drop or timeout): the server
  may have queued it; never resend automatically.

Servers are tried in their configured order. A server that cannot be connected to (refused,
timeout, bad greeting, TLS or AUTH failure) or that answers 421 or 530 is marked down for a backoff
(2 s, doubling up to 5 min, reset by a success) and the same message goes to the next server:
nothing of it was accepted, so this cannot duplicate. The backoff escalates once per failure
*event*: the other connections that fail while the server is already down do not double it again.
While a server is down a probe connects to it every ``probe_every`` seconds (1 s) and brings it
back at its first good greeting, so a server that was away for 20 s is used again within a second
or so of its return, not at the end of its backoff.

A *message's* trouble is not the server's health. A *fresh* connection that drops before the body
sends the message to the next server without marking this one down; a *reused* connection that
drops before the body (the server timed it out) is replaced once; a command that times out (the
server stalls on this recipient) fails this message only, as a transient error, and its connection.
When every server is down a message does not fail at once: it waits for a server to come back
(its probe, or its backoff running out) for up to ``hold_when_down`` seconds (30 s), so a blip of
a few seconds costs those seconds, not a retry round (30 s at the least); after that it fails as
transient. A transaction still waiting after ``slow_after`` seconds (3 s) gives its pool slot back, so a few
stalling recipients cannot hold every connection: the pool opens another one for the next message
(stalled transactions may add at most ``pool_size`` connections to the pool).

Order of waiting per message: a slot for the recipient's domain, then a rate token, then a
connection, so a busy domain never holds connections other domains could use. The rate and the
per-domain slots of server ``<name>`` are the limits ``smtp:<name>`` of the pool's ``Limits``
(``topslot.channels.limits``): shared by every process and node, or in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiosmtplib import (
    SMTPException,
    SMTPNotSupported,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from topslot import metrics
from topslot.channel import Channel
from topslot.channels.base import EmailEnvelope, Message
from topslot.channels.limits import Limits, LocalLimits, scaled
from topslot.channels.ratelimit import recipient_domain
from topslot.channels.registry import Provider
from topslot.channels.smtp_connection import SmtpConnection
from topslot.channels.smtp_replies import (
    Stage,
    classify_reply,
    is_server_problem,
    provider_id_from_reply,
)
from topslot.errors import AmbiguousSendError, PermanentSendError, TransientSendError
from topslot.logs import get_logger
from topslot.rendering.mime import seven_bit
from topslot.settings import Settings, SmtpServer

log = get_logger()

_DROPS = (SMTPServerDisconnected, SMTPTimeoutError, ConnectionError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class SmtpTimeouts:
    connect: float = 30.0  # TCP + greeting + EHLO/STARTTLS/AUTH, each step
    command: float = 60.0  # MAIL, RCPT, DATA's 354, NOOP, RSET
    data_end: float = 600.0  # the reply to the final dot: RFC 5321 allows the server 10 minutes
    quit: float = 2.0


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = 2.0
    factor: float = 2.0
    most: float = 300.0

    def after(self, failures: int) -> float:
        return min(self.most, self.first * self.factor ** max(0, failures - 1))


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One server as the pool sees it now."""

    name: str
    up: bool
    down_for: float  # seconds left in the backoff (0 when up)
    failures: int  # consecutive
    open_connections: int
    idle_connections: int
    connects: int  # connections opened so far


class _ServerFailed(Exception):
    """This server cannot take the message now and nothing of it was accepted: use the next one."""

    def __init__(self, reason: str, code: int | str | None = None):
        super().__init__(reason)
        self.code = code


class _ServerDown(Exception):
    """The server went down while this message waited for it: try the next one."""


class _TryNext(Exception):
    """This message could not start on this server (a fresh connection dropped before the body),
    though the server is not known to be down: try the next one, without marking this one down."""


class _Dropped(Exception):
    def __init__(self, stage: Stage, cause: BaseException):
        super().__init__(f"{stage}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.timed_out = isinstance(cause, TimeoutError)  # SMTPTimeoutError is one too


class _Server:
    """One configured server: its connections, limits and health."""

    def __init__(
        self,
        name: str,
        config: SmtpServer,
        limits: Limits,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
    ):
        self.name = name
        self.config = config
        limit = f"smtp:{name}"
        self.bucket = limits.pace(limit, config.rate_per_second, clock=clock, sleep=sleep)  # waits for a token
        self.domains = limits.slots(limit, config.max_per_domain)
        self.slots = asyncio.Semaphore(config.pool_size)
        self.idle: list[SmtpConnection] = []  # LIFO: the warmest connection first
        self.open = 0
        self.connects = 0
        self.down_until = 0.0
        self.failures = 0
        self.probe: asyncio.Task[None] | None = None  # while down: connects until the server answers
        self.slow = _SlowSlots(config.pool_size)  # slots given back by stalled transactions


class SmtpPool:
    """The email ``Messenger`` over one or more SMTP servers (see the module docstring)."""

    channel: Channel = "email"
    drops_repeats = False
    provider = "smtp"

    def __init__(
        self,
        servers: Mapping[str, SmtpServer],
        *,
        timeouts: SmtpTimeouts = SmtpTimeouts(),
        backoff: Backoff = Backoff(),
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        idle_check_after: float = 5.0,
        idle_limit: float = 50.0,
        probe_every: float = 1.0,
        slow_after: float = 3.0,
        hold_when_down: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        limits: Limits | None = None,
    ):
        """``limits``: where each server's rate and per-domain limit are held (default: in this
        process, at the figures of ``servers``)."""
        if not servers:
            raise ValueError("SmtpPool needs at least one server")
        self.timeouts = timeouts
        self.backoff = backoff
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self._idle_check_after = idle_check_after  # NOOP a connection idle this long before reuse
        self._idle_limit = idle_limit  # reconnect instead (servers time idle sessions out)
        self._probe_every = probe_every  # while a server is down: try a connection this often
        self._slow_after = slow_after  # a transaction waiting this long gives its pool slot back
        self._hold_when_down = hold_when_down  # every server down: a message waits this long for one
        self._up = asyncio.Event()  # set (and replaced) whenever a server comes back
        self._clock = clock
        limits = limits or LocalLimits()
        self._servers = [_Server(name, config, limits, clock, sleep) for name, config in servers.items()]
        self._closed = False
        # the first server's rate: the others are failovers, not extra capacity
        self.rate_per_second: float | None = limits.own_rate(next(iter(servers.values())).rate_per_second)
        metrics.SMTP_POOLS.add(self)  # topslot_smtp_connections_open reads ``status`` at scrape time

    @classmethod
    def from_settings(cls, settings: Settings, *, limits: Limits | None = None, **options: Any) -> SmtpPool:
        """The configured servers, their rates and per-domain limits held by ``limits``, each with
        the ``limits.share`` of its pool."""
        limits = limits or LocalLimits()
        return cls(shared_servers(settings.smtp, limits.share), limits=limits, **options)

    # ------------------------------------------------------------ Messenger

    async def send(self, message: Message) -> str:
        if self._closed:
            raise TransientSendError("SMTP pool is closed", code="closed")
        if not isinstance(message, EmailEnvelope):
            raise TypeError("SMTP takes emails")
        give_up_at = self._clock() + self._hold_when_down
        failed: _ServerFailed | _TryNext | None = None  # the last failure seen, for the error
        while True:
            for server in self._servers:
                if self._clock() < server.down_until:
                    continue
                try:
                    provider_id = await self._send_via(server, message)
                except _ServerFailed as exc:
                    self._mark_down(server, exc)
                    failed = exc
                    continue
                except _TryNext as exc:
                    failed = exc
                    continue
                except _ServerDown:
                    continue
                server.failures = 0
                return provider_id
            if not await self._server_back(give_up_at):
                break
        wait = max(0.0, min(s.down_until for s in self._servers) - self._clock())
        reason = f"no SMTP server available: {failed}" if failed else "every SMTP server is backing off"
        code = failed.code if isinstance(failed, _ServerFailed) else "dropped" if failed else "servers_down"
        raise TransientSendError(reason, code=code, retry_after=wait)

    async def _server_back(self, give_up_at: float) -> bool:
        """Every server is down: wait for one to come back (its probe, or its backoff running out),
        until ``give_up_at``. False at once when some server is up yet could not take the message
        (it is this message's trouble, not a server's), or when the pool is closed."""
        now = self._clock()
        if self._closed or not all(now < s.down_until for s in self._servers) or now >= give_up_at:
            return False
        timeout = min(give_up_at, min(s.down_until for s in self._servers)) - now
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._up.wait()
        return not self._closed

    async def close(self) -> None:
        """QUIT and close every idle connection; connections in use close when they come back."""
        self._closed = True
        self._up.set()  # messages waiting for a server: give up now
        for server in self._servers:
            if server.probe is not None:
                server.probe.cancel()
            idle, server.idle = server.idle, []
            await asyncio.gather(*(self._quit(server, conn) for conn in idle))

    def status(self) -> list[ServerStatus]:
        now = self._clock()
        return [
            ServerStatus(
                name=s.name,
                up=now >= s.down_until,
                down_for=max(0.0, s.down_until - now),
                failures=s.failures,
                open_connections=s.open,
                idle_connections=len(s.idle),
                connects=s.connects,
            )
            for s in self._servers
        ]

    # ------------------------------------------------------------ one server

    async def _send_via(self, server: _Server, message: EmailEnvelope) -> str:
        async with server.domains.hold(recipient_domain(message.rcpt_to)):
            await server.bucket.acquire()
            async with server.slow.slot(server.slots, self._slow_after):
                if self._clock() < server.down_until:
                    raise _ServerDown
                conn, fresh = await self._checkout(server, fresh=False)
                try:
                    return await self._transact(conn, message)
                except _Dropped as dropped:
                    if fresh or dropped.timed_out:  # a stall is this message's, not a stale connection
                        raise self._not_started(dropped) from None
                finally:
                    self._checkin(server, conn)
                # a reused connection the server had timed out: one more try on a fresh one
                conn, _ = await self._checkout(server, fresh=True)
                try:
                    return await self._transact(conn, message)
                except _Dropped as again:
                    raise self._not_started(again) from None
                finally:
                    self._checkin(server, conn)

    @staticmethod
    def _not_started(dropped: _Dropped) -> Exception:
        """A message whose transaction broke before its body: a stall fails it (to be retried), a
        drop sends it to the next server. Neither marks the server down."""
        if dropped.timed_out:
            return TransientSendError(f"the server stalled on this message ({dropped})", code="stalled")
        return _TryNext(f"connection dropped: {dropped}")

    async def _transact(self, conn: SmtpConnection, message: EmailEnvelope) -> str:
        """One MAIL/RCPT/DATA transaction. Raises a SendError, _ServerFailed, or _Dropped (lost
        before the body started: the caller may fail over)."""
        data = message.data
        if "8bitmime" not in conn.esmtp_extensions and not data.isascii():
            data = seven_bit(data)  # 8bit parts re-encoded for a server that does not take them
        try:
            reply = await conn.send_raw(
                message.mail_from,
                message.rcpt_to,
                data,
                utf8=not (message.mail_from.isascii() and message.rcpt_to.isascii()),
                crlf=message.crlf,  # seven_bit keeps CRLF line ends
            )
        except SMTPResponseException as exc:
            raise self._reply_error(conn, conn.stage, exc.code, exc.message) from None
        except SMTPNotSupported as exc:
            raise PermanentSendError(str(exc), code="not_supported") from None
        except ValueError as exc:  # aiosmtplib refuses an address it cannot send safely
            raise PermanentSendError(f"unusable address: {exc}", code="invalid_address") from None
        except _DROPS as exc:
            conn.close()
            raise self._drop_error(conn.stage, exc) from None
        conn.sent += 1
        return provider_id_from_reply(reply.message)

    @staticmethod
    def _reply_error(conn: SmtpConnection, stage: Stage, code: int, text: str) -> Exception:
        if is_server_problem(code) or stage == "connect":  # 421/530, or EHLO refused
            conn.close()
            return _ServerFailed(f"{stage}: {code} {text}", code=code)
        return classify_reply(stage, code, text)

    @staticmethod
    def _drop_error(stage: Stage, exc: BaseException) -> Exception:
        detail = f"{type(exc).__name__}: {exc}"
        if stage == "after_dot":
            kind = "timeout" if isinstance(exc, TimeoutError) else "disconnect"
            return AmbiguousSendError(
                f"no reply after the final dot ({detail}); the server may have accepted it", code=kind
            )
        if stage == "body":
            return TransientSendError(
                f"connection lost before the final dot was sent ({detail})", code="lost_before_dot"
            )
        return _Dropped(stage, exc)

    # ------------------------------------------------------------ connections

    async def _checkout(self, server: _Server, *, fresh: bool) -> tuple[SmtpConnection, bool]:
        while server.idle and not fresh:
            conn = server.idle.pop()
            if not conn.is_connected:
                server.open -= 1
                continue
            idle_for = self._clock() - conn.last_used
            if idle_for > self._idle_limit:
                await self._quit(server, conn)
                continue
            if idle_for > self._idle_check_after and not await self._alive(conn):
                server.open -= 1
                continue
            return conn, False
        return await self._connect(server), True

    def _checkin(self, server: _Server, conn: SmtpConnection) -> None:
        if conn in server.idle:
            return
        if conn.is_connected and not self._closed:
            conn.last_used = self._clock()
            server.idle.append(conn)
        else:
            conn.close()
            server.open -= 1

    async def _connect(self, server: _Server) -> SmtpConnection:
        config = server.config
        conn = SmtpConnection(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            use_tls=config.tls == "tls",
            start_tls=config.tls == "starttls",
            tls_context=self._tls_context,
            local_hostname=self._local_hostname,
            timeout=self.timeouts.connect,
            data_timeout=self.timeouts.data_end,
        )
        try:
            await conn.connect()
            if conn.is_ehlo_or_helo_needed:
                await conn.ehlo()
        except SMTPResponseException as exc:
            conn.close()
            raise _ServerFailed(f"connect: {exc.code} {exc.message}", code=exc.code) from None
        except (SMTPException, *_DROPS, ssl.SSLError) as exc:
            conn.close()
            raise _ServerFailed(f"connect: {type(exc).__name__}: {exc}", code="connect") from None
        conn.timeout = self.timeouts.command
        server.open += 1
        server.connects += 1
        log.debug("smtp_connected", server=server.name, open_connections=server.open)
        return conn

    async def _alive(self, conn: SmtpConnection) -> bool:
        try:
            reply = await conn.noop(timeout=self.timeouts.command)
        except (SMTPException, *_DROPS):
            conn.close()
            return False
        if reply.code != 250:
            conn.close()
            return False
        return True

    async def _quit(self, server: _Server, conn: SmtpConnection) -> None:
        try:
            if conn.is_connected:
                await conn.quit(timeout=self.timeouts.quit)
        except (SMTPException, *_DROPS):
            pass
        finally:
            conn.close()
            server.open -= 1

    def _mark_down(self, server: _Server, failed: _ServerFailed) -> None:
        """One failure event: the backoff escalates, the probe starts. A failure seen while the
        server is already down (the other connections of the same event) changes nothing."""
        if self._clock() < server.down_until:
            return
        server.failures += 1
        seconds = self.backoff.after(server.failures)
        server.down_until = self._clock() + seconds
        log.warning(
            "smtp_server_down",
            server=server.name,
            reason=str(failed),
            code=failed.code,
            backoff_s=round(seconds, 3),
            failures=server.failures,
        )
        if (server.probe is None or server.probe.done()) and not self._closed:
            server.probe = asyncio.create_task(self._probe(server), name=f"smtp-probe-{server.name}")

    async def _probe(self, server: _Server) -> None:
        """While ``server`` is down, connect every ``probe_every`` seconds; at the first good
        greeting it is up again (that connection is kept for the next message)."""
        while not self._closed and (left := server.down_until - self._clock()) > 0:
            await asyncio.sleep(min(self._probe_every, left))
            if self._closed or self._clock() >= server.down_until:
                return  # the backoff ran out: messages try the server themselves
            try:
                conn = await self._connect(server)
            except _ServerFailed:
                continue  # still down: the same event, no escalation
            server.down_until = 0.0
            self._checkin(server, conn)
            log.info("smtp_server_up", server=server.name, failures=server.failures)
            self._up.set()  # the messages waiting for a server go on
            self._up = asyncio.Event()
            return


class _SlowSlots:
    """Pool slots given back early by stalled transactions: at most ``most`` at a time, so stalls
    can open at most that many connections beyond the pool (twice the pool size in all)."""

    def __init__(self, most: int):
        self.most = most
        self.out = 0  # transactions running without their slot

    def slot(self, slots: asyncio.Semaphore, give_back_after: float) -> _SlowSlot:
        """Hold one of ``slots`` for the block, but give it back after ``give_back_after`` seconds
        if the block is still running and fewer than ``most`` already have; released exactly once."""
        return _SlowSlot(self, slots, give_back_after)


class _SlowSlot(contextlib.AbstractAsyncContextManager[None]):
    """One use of ``_SlowSlots.slot``. A class, not an ``asynccontextmanager``: it is entered for every
    email sent, and a generator-based context manager costs about twice as much a use."""

    __slots__ = ("_owner", "_slots", "_after", "_held", "_early", "_timer")

    def __init__(self, owner: _SlowSlots, slots: asyncio.Semaphore, give_back_after: float):
        self._owner, self._slots, self._after = owner, slots, give_back_after
        self._held = self._early = False

    async def __aenter__(self) -> None:
        await self._slots.acquire()
        self._held = True
        self._timer = asyncio.get_running_loop().call_later(self._after, self._give_back)

    def _give_back(self) -> None:
        owner = self._owner
        if self._held and owner.out < owner.most:
            self._held, self._early = False, True
            owner.out += 1
            self._slots.release()

    async def __aexit__(self, *exc: object) -> None:
        self._timer.cancel()
        if self._held:
            self._slots.release()
        if self._early:
            self._owner.out -= 1


def shared_servers(servers: Mapping[str, SmtpServer], share: float) -> dict[str, SmtpServer]:
    """Each server with ``share`` of its pool (one of N dispatch processes); its rate and
    per-domain limit stay as configured: the pool's ``Limits`` divide them when they are local."""
    if share >= 1:
        return dict(servers)
    return {name: s.model_copy(update={"pool_size": scaled(s.pool_size, share)}) for name, s in servers.items()}


PROVIDER = Provider(
    "email",
    "smtp",
    configured=lambda s: bool(s.smtp),
    rate=lambda s: next(iter(s.smtp.values())).rate_per_second,  # the primary: the others are failovers
    build=lambda s, clock, limits: SmtpPool.from_settings(s, limits=limits),
)
