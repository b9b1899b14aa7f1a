"""SMS through Twilio's Messaging API (``POST /2010-04-01/Accounts/{sid}/Messages.json``), with the
official ``twilio`` package's async HTTP client (``AsyncTwilioHttpClient``, aiohttp).

``TwilioSms.send(message)`` creates one Message and returns its SID (``SM…``), or raises exactly one
of the ``Messenger`` errors. Twilio has no idempotency key for message creation, so a POST is never
repeated here: the client is built without ``max_retries`` (aiohttp_retry would repeat a POST on any
5xx) and aiohttp itself only re-sends idempotent methods on a stale keep-alive connection.

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

"Before the request was written" is observed, not guessed: the connector flags the current send
through a ``ContextVar`` the moment it hands over a connection (aiohttp writes the request right
after); until then nothing of the message left this process, so a failure (``ClientConnectorError``,
our own timeout while connecting or waiting for a pooled connection) is transient. After it, any
failure is ambiguous (a stale keep-alive connection closed by Twilio included: safe, never twice).

Per request: one ``asyncio.timeout(timeout_seconds)`` (the twilio client's own ``timeout`` is not
passed to aiohttp). Per messenger: at most ``max_in_flight`` requests open, paced by a
``TokenBucket`` at ``rate_per_second`` (both already divided by the registry's ``share``). The
aiohttp session is created on the first send (it needs the running loop) and closed by ``close()``.

The request is built here, the form fields as Twilio names them (To, Body, From or
MessagingServiceSid, StatusCallback), and the answer read from Twilio's JSON (``sid``; ``code`` and
``message`` for errors) without the SDK's resource layer: its ``MessageInstance`` (three dates parsed,
the request copied) cost a third of a send's CPU and nothing here needs them. The API host is
``settings.twilio.base_url`` (``https://api.twilio.com``; a fake in tests and rehearsals); edge and
region routing (``TWILIO_EDGE`` / ``TWILIO_REGION``) is never applied, so nothing in the environment
can send the messages elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient

from daemon.channel import Channel
from daemon.channels.base import Message, TextMessage
from daemon.channels.ratelimit import TokenBucket
from daemon.channels.registry import Provider
from daemon.delivery import SuppressionReason
from daemon.errors import AmbiguousSendError, PermanentSendError, SendError, TransientSendError
from daemon.settings import TWILIO_API, Settings

STATUS_CALLBACK_PATH = "/twilio/status"

STOPPED = 21610  # the recipient replied STOP (or another opt-out word) to this sender
BUSY_CODES = frozenset({20429, 21611})  # too many concurrent requests; the sender's queue is full
CONFIG_CODES = frozenset({20003, 20005, 20006, 20404})  # credentials, account suspended, access, not found
REFUSED_CODES = frozenset({21211, 21408, 21606, 21612, 21614})  # permanent whatever the HTTP status

BUSY_BACKOFF = 30.0
"""Seconds to wait after a 429 without ``Retry-After``; jittered up to twice that, so a herd of
refused messages does not come back at once (the dispatcher's own first backoff is 30 s too)."""
RETRY_AFTER_MOST = 3600.0


_quiet = logging.getLogger("daemon.channels.twilio_sms.http")
_quiet.setLevel(logging.WARNING)  # the twilio client logs ~10 INFO lines per request


@dataclass(slots=True)
class _Attempt:
    """What one send's HTTP request got to (set by the connector and the client)."""

    written: bool = False  # it holds a connection, so the request is (being) written: it may reach Twilio
    headers: Mapping[str, str] | None = None  # the response's headers, once it came


_attempt: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("twilio_attempt", default=None)


class _MarkingConnector(aiohttp.TCPConnector):
    """Marks the current send as (possibly) written as soon as it holds a connection: aiohttp writes
    the request at once from there, so any later failure may come after Twilio got it. Until then
    (DNS, refused, TLS, connect timeout, waiting for a pooled connection) nothing left the process."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        connection = await super().connect(req, traces, timeout)
        attempt = _attempt.get()
        if attempt is not None:
            attempt.written = True
        return connection


def _basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class _HttpClient(AsyncTwilioHttpClient):
    """twilio's aiohttp client, with our session (connection limit, marking connector) and no retries;
    it also keeps the response headers (``Retry-After``) for the send that made the request."""

    def __init__(self, connections: int):
        super().__init__(pool_connections=False, logger=_quiet)  # no session of its own, max_retries=None
        self.session = aiohttp.ClientSession(connector=_MarkingConnector(limit=connections))

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Any:
        if auth is not None:  # the same header, without aiohttp's deprecated BasicAuth
            headers = {**(headers or {}), "Authorization": _basic_auth(*auth)}
        response = await super().request(
            method, url, params=params, data=data, headers=headers, timeout=timeout, allow_redirects=allow_redirects
        )
        attempt = _attempt.get()
        if attempt is not None:
            attempt.headers = response.headers
        return response


class TwilioSms:
    """The SMS ``Messenger`` over Twilio (see the module docstring)."""

    channel: Channel = "sms"
    provider = "twilio"
    outbox = False

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
        jitter: Callable[[], float] = random.random,
    ):
        if not (from_number or messaging_service_sid):
            raise ValueError("TwilioSms needs from_number or messaging_service_sid")
        if timeout <= 0 or max_in_flight < 1:
            raise ValueError("timeout must be > 0 and max_in_flight >= 1")
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.base_url = base_url.rstrip("/")
        self.status_callback = status_callback
        self.rate_per_second: float | None = rate_per_second
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.bucket = TokenBucket(rate_per_second, clock=monotonic, sleep=sleep)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._jitter = jitter
        self._http: _HttpClient | None = None  # built on the first send (aiohttp needs the running loop)
        self._messages_url = f"{self.base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
        shared = {"MessagingServiceSid": messaging_service_sid} if messaging_service_sid else {"From": from_number}
        if status_callback:
            shared["StatusCallback"] = status_callback
        self._shared_form = "&" + urlencode(shared)
        self._headers = {
            "Authorization": _basic_auth(account_sid, auth_token),
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        self._active = 0
        self._idle: asyncio.Event | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, *, share: float = 1.0, **options: Any) -> TwilioSms:
        """The ``twilio`` settings, with ``share`` of the rate and of ``max_in_flight``."""
        t = settings.twilio
        if not t.configured or t.account_sid is None or t.auth_token is None:
            raise ValueError("twilio is not configured (twilio.account_sid)")
        callback = settings.tracking_base_url.rstrip("/") + STATUS_CALLBACK_PATH if t.status_callbacks else None
        return cls(
            account_sid=t.account_sid,
            auth_token=t.auth_token.get_secret_value(),
            from_number=t.from_number,
            messaging_service_sid=t.messaging_service_sid,
            base_url=t.base_url,
            status_callback=callback,
            rate_per_second=t.rate_per_second * share,
            timeout=t.timeout_seconds,
            max_in_flight=max(1, int(t.max_in_flight * share + 1e-9)),
            **options,
        )

    # ------------------------------------------------------------ Messenger

    async def send(self, message: Message) -> str:
        if not isinstance(message, TextMessage):
            raise TypeError("Twilio SMS takes text messages")
        if self._closed:
            raise TransientSendError("the Twilio messenger is closed", code="closed")
        async with self._slots:
            await self.bucket.acquire()
            if self._closed:
                raise TransientSendError("the Twilio messenger is closed", code="closed")
            http = self._client_now()
            self._active += 1
            try:
                return await self._create(http, message)
            finally:
                self._active -= 1
                if self._active == 0 and self._idle is not None:
                    self._idle.set()

    async def close(self) -> None:
        """Refuse new sends, let the requests in flight finish (each is bounded by the timeout),
        then close the HTTP session. Idempotent."""
        self._closed = True
        if self._active:
            self._idle = self._idle or asyncio.Event()
            self._idle.clear()
            try:
                async with asyncio.timeout(self.timeout + 1):
                    await self._idle.wait()
            except TimeoutError:
                pass
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    # ------------------------------------------------------------ one request

    def _client_now(self) -> _HttpClient:
        if self._http is None:
            self._http = _HttpClient(connections=self.max_in_flight)
        return self._http

    def _form(self, message: TextMessage) -> bytes:
        """The Messages API's form body (Twilio's own field names), URL-encoded; the fields every
        message shares are encoded once."""
        return (urlencode({"To": message.to, "Body": message.body}) + self._shared_form).encode("ascii")

    async def _create(self, http: _HttpClient, message: TextMessage) -> str:
        attempt = _Attempt()
        token = _attempt.set(attempt)
        try:
            async with asyncio.timeout(self.timeout):
                response = await http.request(
                    "POST", self._messages_url, data=self._form(message), headers=self._headers
                )
            status, body = response.status_code, response.text
        except TimeoutError:
            if attempt.written:
                raise AmbiguousSendError(
                    f"no answer from Twilio within {self.timeout:g} s after the request was sent", code="timeout"
                ) from None
            raise TransientSendError(
                f"could not reach Twilio within {self.timeout:g} s (nothing was sent)", code="connect_timeout"
            ) from None
        except aiohttp.ClientConnectorError as exc:  # DNS, refused, TLS: no connection, nothing sent
            raise TransientSendError(f"could not connect to Twilio: {exc}", code="connect") from None
        except (aiohttp.ClientError, OSError) as exc:
            what = f"{type(exc).__name__}: {exc}"
            if attempt.written:
                raise AmbiguousSendError(
                    f"connection lost after the request was sent: {what}", code="dropped"
                ) from None
            raise TransientSendError(f"connection to Twilio failed before sending: {what}", code="connect") from None
        finally:
            _attempt.reset(token)
        answer = _json_object(body)
        if 200 <= status < 300:
            sid = answer.get("sid")
            if not isinstance(sid, str) or not sid:  # created or not, we cannot tell
                raise AmbiguousSendError(f"Twilio answered {status} without a message SID", code="no_sid")
            return sid
        code = answer.get("code")
        text = answer.get("message") or " ".join(str(answer[k]) for k in ("title", "detail") if answer.get(k))
        raise classify(
            status,
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            str(text or ""),
            retry_after=_header(attempt.headers, "Retry-After"),
            jitter=self._jitter,
        )


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


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), within [0, 1 h]."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        # an HTTP date is the server's real time: compare with the real clock, not a simulated one
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MOST)


def _json_object(body: str) -> dict[str, Any]:
    """Twilio's JSON answer as a dict ({} for anything else: classify by the HTTP status alone)."""
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:  # a plain dict: compare names without case
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


PROVIDER = Provider(
    "sms",
    "twilio",
    configured=lambda s: s.twilio.configured,
    rate=lambda s: s.twilio.rate_per_second,
    build=lambda s, clock, share: TwilioSms.from_settings(s, share=share),
)
