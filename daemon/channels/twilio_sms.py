"""SMS through Twilio's Messaging API (``POST /2010-04-01/Accounts/{sid}/Messages.json``), posted with
one ``HttpClient`` (``topslot.channels.http_client``: keep-alive connections) per messenger.

``TwilioSms.send(message)`` creates one Message and returns its SID (``SM…``), or raises exactly one
of the ``Messenger`` errors. Everything but the form of a message and a few error codes is in
``TwilioMessages``, which WhatsApp (``topslot.channels.twilio_whatsapp``) shares. Twilio has no
idempotency key for message creation, so a POST is never repeated here: the client retries nothing,
not even on a stale keep-alive connection (unlike retrying clients such as aiohttp_retry, which would
repeat a POST on any 5xx).

How an outcome is classified (``classify``):

=======================================================  ==========================================
HTTP 429, or code 20429 (too many requests) or 21611      ``TransientSendError``; ``retry_after`` from
(the sender's queue is full)                              ``Retry-After``, else 30–60 s (jittered)
code 21610 (the recipient replied STOP)                   ``PermanentSendError(suppress=True)``
codes 21211, 21408, 21606, 21612, 21614                   ``PermanentSendError``
HTTP 401/403, codes 20003/20005/20006/20404, or a 404     ``TransientSendError`` ("check the
without a code (credentials, account, wrong URL)          settings"): nothing was created
any other 4xx                                             ``PermanentSendError``
any 5xx                                                   ``AmbiguousSendError`` (Twilio may have
                                                          created it)
any other status (1xx, 3xx), a 2xx without a SID or       ``AmbiguousSendError``
with an unreadable body
no connection (refused, DNS, TLS, connect timeout):       ``TransientSendError``
nothing of the request was written
a timeout or dropped connection after the request was     ``AmbiguousSendError``
written
=======================================================  ==========================================

"Before the request was written" is observed, not guessed (``topslot.channels.http``, shared with
the other HTTP messengers): the client flags the current send right before the request's first
byte goes to the socket; until then nothing of the message left this process, so a failure
(``ConnectFailed``, our own timeout while connecting or waiting for a free connection) is
transient. After it, any failure is ambiguous (a stale keep-alive connection closed by Twilio
included: safe, never twice).

Per request: one deadline of ``timeout_seconds`` (``hand_over``'s). Per messenger:
at most ``max_in_flight`` requests open (the registry's ``share`` of it), paced by the limit
``twilio`` of the registry's ``Limits`` (shared by every process and node, or this process's share).
The client connects on the first send; ``close()`` closes its connections.

The request is built here, as the ``twilio`` SDK's ``AsyncTwilioHttpClient`` sent it (the same method,
URL, form body, ``Authorization: Basic``, ``Accept`` and ``Content-Type`` headers, redirects not
followed), the form fields as Twilio names them (To, Body, From or MessagingServiceSid,
StatusCallback), and the answer read from Twilio's JSON (``sid``; ``code`` and ``message`` for
errors) without the SDK: its resource layer (``MessageInstance``: three dates parsed, the request
copied) cost a third of a send's CPU, and its HTTP client (a request object copied and logged per
send, the body decoded to text) most of a tenth, for nothing used here. The API host is
``settings.twilio.base_url`` (``https://api.twilio.com``; a fake in tests and rehearsals); edge and
region routing (``TWILIO_EDGE`` / ``TWILIO_REGION``) is never applied, so nothing in the environment
can send the messages elsewhere.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from topslot.channel import Channel
from topslot.channels.base import Message, TextMessage
from topslot.channels.http import (
    SendGate,
    basic_auth,
    form_quote,
    hand_over,
    json_object,
    parse_retry_after,
)
from topslot.channels.http_client import HttpClient
from topslot.channels.limits import Limits, LocalLimits, scaled
from topslot.channels.ratelimit import Pace
from topslot.channels.registry import Provider
from topslot.delivery import SuppressionReason
from topslot.errors import AmbiguousSendError, PermanentSendError, SendError, TransientSendError
from topslot.settings import TWILIO_API, Settings

STATUS_CALLBACK_PATH = "/twilio/status"

STOPPED = 21610  # the recipient replied STOP (or another opt-out word) to this sender
BUSY_CODES = frozenset({20429, 21611})  # too many concurrent requests; the sender's queue is full
CONFIG_CODES = frozenset({20003, 20005, 20006, 20404})  # credentials, account suspended, access, not found
REFUSED_CODES = frozenset({21211, 21408, 21606, 21612, 21614})  # permanent whatever the HTTP status

BUSY_BACKOFF = 30.0
"""Seconds to wait after a 429 without ``Retry-After``; jittered up to twice that, so a herd of
refused messages does not come back at once (the dispatcher's own first backoff is 30 s too)."""


class TwilioMessages:
    """A ``Messenger`` over Twilio's Messages API (see the module docstring): the HTTP client, pacing,
    concurrency, closing, and reading Twilio's answer. A subclass says what it sends: ``channel``,
    ``provider``, one message's form fields (``_form``, which may refuse a message before anything is
    sent) and, for codes of its own, ``_refusal``. ``from_number`` is the ``From`` as Twilio takes it
    (``+E164``; ``whatsapp:+E164`` for WhatsApp)."""

    channel: Channel
    provider: str
    drops_repeats = False

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str = TWILIO_API,
        status_callback: str | None = None,
        rate_per_second: float = 1.0,
        timeout: float = 15.0,
        max_in_flight: int = 20,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pace: Pace | None = None,
        jitter: Callable[[], float] = random.random,
    ):
        if not (from_number or messaging_service_sid):
            raise ValueError(f"{type(self).__name__} needs from_number or messaging_service_sid")
        self.account_sid = account_sid
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.base_url = base_url.rstrip("/")
        self.status_callback = status_callback
        self.rate_per_second: float | None = rate_per_second
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.gate = SendGate(
            "Twilio",
            rate_per_second=rate_per_second,
            max_in_flight=max_in_flight,
            timeout=timeout,
            monotonic=monotonic,
            sleep=sleep,
            pace=pace,
        )
        self.bucket = self.gate.bucket
        self._jitter = jitter
        self._http = HttpClient(self.base_url, max_in_flight)
        self._messages_url = f"{self.base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
        shared = {"MessagingServiceSid": messaging_service_sid} if messaging_service_sid else {"From": from_number}
        if status_callback:
            shared["StatusCallback"] = status_callback
        self._shared_form = "&" + urlencode(shared)
        self._headers = {
            "Authorization": basic_auth(account_sid, auth_token),
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }

    # ------------------------------------------------------------ Messenger

    async def send(self, message: Message) -> str:
        if not isinstance(message, TextMessage):
            raise TypeError(f"{type(self).__name__} takes text messages")
        self.gate.refuse_if_closed()
        form = self._form(message)  # a message it cannot take is refused here, before any wait or request
        async with self.gate.slot():
            return await self._create(form)

    async def close(self) -> None:
        """Refuse new sends, let the requests in flight finish (each is bounded by the timeout),
        then close the HTTP connections. Idempotent."""
        await self.gate.drain()
        await self._http.close()

    # ------------------------------------------------------------ one request

    def _form(self, message: TextMessage) -> bytes:
        """One message's form body for the Messages API (Twilio's own field names), URL-encoded, with
        ``self._shared_form`` (sender, status callback: encoded once) at its end; or a
        ``PermanentSendError`` for a message the provider cannot take (nothing is sent)."""
        raise NotImplementedError

    def _refusal(self, status: int, code: int | None, text: str, retry_after: str | None) -> SendError:
        """The ``Messenger`` error for a non-2xx answer (``classify``'s table)."""
        return classify(status, code, text, retry_after=retry_after, jitter=self._jitter)

    async def _create(self, form: bytes) -> str:
        async with hand_over("Twilio", self.timeout):
            response = await self._http.post(self._messages_url, form, self._headers)
        status, answer = response.status, json_object(response.body)
        if 200 <= status < 300:
            sid = answer.get("sid")
            if not isinstance(sid, str) or not sid:  # created or not, we cannot tell
                raise AmbiguousSendError(f"Twilio answered {status} without a message SID", code="no_sid")
            return sid
        code = answer.get("code")
        text = answer.get("message") or " ".join(str(answer[k]) for k in ("title", "detail") if answer.get(k))
        raise self._refusal(
            status,
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            str(text or ""),
            response.headers.get("retry-after"),
        )


class TwilioSms(TwilioMessages):
    """The SMS ``Messenger`` over Twilio (see the module docstring)."""

    channel: Channel = "sms"
    provider = "twilio"

    @classmethod
    def from_settings(cls, settings: Settings, *, limits: Limits | None = None, **options: Any) -> TwilioSms:
        """The ``twilio`` settings, paced by ``limits`` (``twilio``), with its ``share`` of ``max_in_flight``."""
        limits = limits or LocalLimits()
        t = settings.twilio
        if not t.configured or t.account_sid is None or t.auth_token is None:
            raise ValueError("twilio is not configured (twilio.account_sid)")
        return cls(
            account_sid=t.account_sid,
            auth_token=t.auth_token.get_secret_value(),
            from_number=t.from_number,
            messaging_service_sid=t.messaging_service_sid,
            base_url=t.base_url,
            status_callback=status_callback_url(settings),
            rate_per_second=limits.own_rate(t.rate_per_second),
            timeout=t.timeout_seconds,
            max_in_flight=scaled(t.max_in_flight, limits.share),
            pace=limits.pace("twilio", t.rate_per_second),
            **options,
        )

    def _form(self, message: TextMessage) -> bytes:
        # what urlencode({"To": ..., "Body": ...}) gives, without its per-call generality
        return f"To={form_quote(message.to)}&Body={form_quote(message.body)}{self._shared_form}".encode("ascii")


def classify(
    status: int,
    code: int | None,
    text: str,
    *,
    retry_after: str | None = None,
    jitter: Callable[[], float] = random.random,
) -> SendError:
    """The ``Messenger`` error for a non-2xx answer from Twilio (the module docstring's table)."""
    if code is not None and code < 10000:  # twilio puts the HTTP status there when the body has no code
        code = None
    label = f"Twilio HTTP {status}" + (f" error {code}" if code is not None else "")
    detail = f"{label}: {text}" if text else label
    if status == 429 or code in BUSY_CODES:
        wait = parse_retry_after(retry_after)
        if wait is None:
            wait = BUSY_BACKOFF * (1 + jitter())
        return TransientSendError(f"{detail} (nothing was sent)", code=code or status, retry_after=wait)
    if code == STOPPED:
        return PermanentSendError(
            f"{detail} (the recipient opted out)", code=code, suppress=True, suppress_reason=SuppressionReason.SMS_STOP
        )
    if code in REFUSED_CODES:
        return PermanentSendError(detail, code=code)
    if code in CONFIG_CODES or status in (401, 403) or (status == 404 and code is None):
        return TransientSendError(
            f"{detail}: Twilio refused the account or credentials, nothing was sent; check twilio.account_sid, "
            "the auth token and twilio.base_url",
            code=code or status,
        )
    if status >= 500:
        return AmbiguousSendError(f"{detail} (Twilio may have created the message)", code=code or status)
    if 400 <= status < 500:
        return PermanentSendError(detail, code=code or status)
    return AmbiguousSendError(f"{detail} (unexpected answer)", code=code or status)


def status_callback_url(settings: Settings) -> str | None:
    """Where Twilio posts a message's receipts (``{tracking_base_url}/twilio/status``), unless
    ``twilio.status_callbacks`` is off."""
    if not settings.twilio.status_callbacks:
        return None
    return settings.tracking_base_url.rstrip("/") + STATUS_CALLBACK_PATH


PROVIDER = Provider(
    "sms",
    "twilio",
    configured=lambda s: s.twilio.configured,
    rate=lambda s: s.twilio.rate_per_second,
    build=lambda s, clock, limits: TwilioSms.from_settings(s, limits=limits),
)
