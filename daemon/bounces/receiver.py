"""The feedback receiver: an LMTP (or SMTP) listener, in the daemon's event loop, that the relay or
MX hands bounces, feedback-loop reports and ``mailto:`` unsubscribes to (aiosmtpd).

Recipients it takes (anything else: ``550 5.1.1``, before the message is sent):

=====================================  ==============================================================
``{local}+{token}@…``                  a bounce to a VERP return path; a token that does not verify
                                       is refused at RCPT (a forgery never gets as far as the data)
``{local}@…``, ``fbl@…``, ``abuse@…``,  feedback loops (ARF reports) and bounces without VERP; matched
``postmaster@…``                       by the returned headers (``topslot.bounces.record``)
``unsubscribe+{token}@…``              the ``mailto:`` of ``List-Unsubscribe`` (RFC 8058 §3.2 allows
                                       either method): unsubscribes that delivery's contact
=====================================  ==============================================================

Each message is read (``classify``), matched and recorded (``record``) before the reply, so a
``250`` means it is in the database; a database that refuses work is answered ``451 4.3.0`` and the
relay tries again later. Under LMTP every recipient gets its own reply. Bounded: a message over
``max_message_bytes`` is refused with ``552``, an idle client is dropped after ``IDLE_TIMEOUT``
seconds, and only the first ``max_message_bytes`` of a message are ever parsed. Listen on loopback
(the default) or a private address the relay reaches: the receiver has no authentication of its
own; what it records is decided by signed tokens, never by who connects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot import metrics
from topslot.bounces.classify import classify
from topslot.bounces.record import Recorded, Result, take
from topslot.clock import Clock
from topslot.errors import TopslotError
from topslot.links.keys import Keyring
from topslot.links.tokens import TokenError, verify
from topslot.links.tracking import MAILTO_LOCAL
from topslot.links.verp import NotVerp, delivery_of, split
from topslot.logs import get_logger
from topslot.settings import BounceSettings
from topslot.store.tracking_events import unsubscribe

log = get_logger("bounces")

MAILBOXES = ("fbl", "abuse", "postmaster")  # plain local parts taken besides the VERP one
IDLE_TIMEOUT = 60.0
PENDING_WAIT = 5.0  # seconds a bounce about a delivery still being sent waits before the 451
PENDING_POLL = 0.1


class ReceiverError(TopslotError):
    """The receiver cannot start (address in use)."""


class FeedbackHandler:
    """aiosmtpd's handler: recipients checked at RCPT, each message recorded at DATA."""

    def __init__(self, engine: AsyncEngine, keyring: Keyring, settings: BounceSettings, clock: Clock):
        self.engine = engine
        self.keyring = keyring
        self.settings = settings
        self.clock = clock
        self.lmtp = settings.protocol == "lmtp"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refused = self._refusal(address)
        if refused is not None:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.original_content or b""
        replies = [await self._deliver(address, content) for address in envelope.rcpt_tos]
        if self.lmtp:
            return "\r\n".join(replies)  # one reply per recipient (RFC 2033 §4.2)
        return next((r for r in replies if not r.startswith("250")), replies[0] if replies else "250 2.0.0 OK")

    def _refusal(self, address: str) -> str | None:
        local = address.partition("@")[0]
        base, plus, _ = local.partition("+")
        if base == MAILTO_LOCAL and plus:
            try:
                verify(split(address)[1], self.keyring, "unsubscribe")
                return None
            except TokenError:
                return "550 5.1.1 no such recipient"
        if base.lower() == self.settings.local and plus:
            try:
                delivery_of(address, self.keyring, self.settings.local)
                return None
            except TokenError:
                metrics.count_feedback("forged", "unmatched")
                log.warning("bounce_address_refused", reason="token does not verify")
                return "550 5.1.1 no such recipient"
        if not plus and local.lower() in (self.settings.local, *MAILBOXES):
            return None
        return "550 5.1.1 no such recipient"

    async def _deliver(self, address: str, content: bytes) -> str:
        now = self.clock.now()
        try:
            if address.partition("@")[0].partition("+")[0] == MAILTO_LOCAL:
                delivery_id = verify(split(address)[1], self.keyring, "unsubscribe").delivery_id
                done = await unsubscribe(self.engine, delivery_id, now, method="MAIL")
                log.info("mailto_unsubscribe", delivery_id=delivery_id, found=done is not None)
                metrics.count_feedback("unsubscribe", "recorded" if done is not None else "unmatched")
                return "250 2.0.0 unsubscribed"
            feedback = classify(content[: self.settings.max_message_bytes], (address,))  # read once
            recorded = await take(self.engine, self.keyring, self.settings, feedback, now)
            waited = 0.0
            while recorded.result is Result.PENDING and waited < PENDING_WAIT:
                await asyncio.sleep(PENDING_POLL)  # the dispatcher records its chunk in a moment
                waited += PENDING_POLL
                recorded = await take(self.engine, self.keyring, self.settings, feedback, now)
            if recorded.result is Result.PENDING:
                return "451 4.3.0 the message it answers is still being sent; try again later"
            return f"250 2.0.0 {recorded.result.value}"
        except (NotVerp, TokenError):
            return "550 5.1.1 no such recipient"
        except Exception as exc:  # the database refuses work: the relay keeps the message and retries
            log.warning("feedback_not_recorded", error=type(exc).__name__)
            return "451 4.3.0 try again later"


async def receive(
    engine: AsyncEngine,
    keyring: Keyring,
    settings: BounceSettings,
    content: bytes,
    envelope_to: tuple[str, ...],
    now: datetime,
) -> Recorded:
    """Read, match and record one returned message (the receiver's and ``bounces import``'s path)."""
    feedback = classify(content[: settings.max_message_bytes], envelope_to)
    return await take(engine, keyring, settings, feedback, now)


class FeedbackReceiver:
    """``await start()`` listens on ``listen_host:listen_port``; ``await close()`` stops."""

    def __init__(self, engine: AsyncEngine, keyring: Keyring, settings: BounceSettings, clock: Clock):
        self.settings = settings
        self.handler = FeedbackHandler(engine, keyring, settings, clock)
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None

    def _protocol(self) -> SMTP:
        kind: Callable[..., SMTP] = LMTP if self.settings.protocol == "lmtp" else SMTP
        return kind(
            self.handler,
            data_size_limit=self.settings.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname="topslot-feedback",
            ident="topslot feedback receiver",
            timeout=IDLE_TIMEOUT,
        )

    async def start(self) -> None:
        s = self.settings
        assert s.listen_port is not None
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._protocol, s.listen_host, s.listen_port, backlog=128)
        except OSError as exc:
            raise ReceiverError(
                f"feedback receiver cannot listen on {s.listen_host}:{s.listen_port}: {exc.strerror or exc} "
                "(set bounces.listen_host / bounces.listen_port)"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("feedback_receiver_started", host=s.listen_host, port=self.port, protocol=s.protocol)

    async def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()
