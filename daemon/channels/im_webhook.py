"""IM through a company's own gateway (``im.<name>.kind: webhook``): one signed JSON POST per message
to ``im.<name>.url``; the gateway turns it into a WeCom, DingTalk or Feishu message (``docs/channels.md``
has the payload, a verifier and a relay).

The request (``PAYLOAD_VERSION`` 1)::

    POST <url>
    Content-Type: application/json; charset=utf-8
    Idempotency-Key: <delivery id>                  the ledger's key (TextMessage.key)
    X-Topslot-Timestamp: <unix seconds>
    X-Topslot-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

    {"version": 1, "provider": "wecom", "delivery_id": 42, "campaign_id": "mothers-day-2027",
     "recipient": "zhangsan", "text": "...", "card": {"title", "text", "link", "button", "coupon"}
     or null, "sent_at": "2027-05-09T07:30:00Z"}

The signature is the conversion webhook's (``topslot.attribution.webhook.signature_for``, the same
timestamp-inside-the-MAC scheme), so one verifier serves both; the timestamp is the real time (a
gateway compares it with its own clock), ``sent_at`` the daemon's clock.

How an answer is classified (``classify``):

==============================================  ================================================
2xx                                             sent; the provider id is ``<name>:<id>`` with the
                                                JSON answer's ``id`` or ``message_id`` (a string
                                                or an integer), else ``<name>:<delivery id>``
401, 403, 407 (the gateway refused our          ``TransientSendError`` ("check im.<name>.secret
signature or credentials)                       and url"): nothing was forwarded
408 (the gateway gave up reading the request)   ``TransientSendError``
409 (a request with this key is still being     ``AmbiguousSendError``
processed)
429                                             ``TransientSendError``, ``retry_after`` from
                                                ``Retry-After`` (or the answer's ``retry_after``),
                                                else 30–60 s jittered
any other 4xx                                   ``PermanentSendError`` with the answer's reason
5xx                                             ``TransientSendError`` (see below)
1xx, 3xx (redirects are not followed)           ``AmbiguousSendError``
no connection (refused, DNS, TLS, connect       ``TransientSendError``
timeout): nothing was written
a timeout or dropped connection after the       ``AmbiguousSendError``
request was written
==============================================  ================================================

A 5xx is transient because the gateway's contract (``docs/channels.md``) is idempotent: it remembers
the ``Idempotency-Key`` of every message it forwarded and answers a repeat with the first answer,
forwarding nothing. So a 5xx means "not forwarded, or forwarded and remembered", and the retry the
dispatcher makes later is safe either way. A timeout or a dropped connection is different: the first
request may still be running at the gateway (its forward not yet remembered) when a retry arrives,
so it stays ``unknown`` and is never retried automatically. The reason quoted from an answer is the
JSON ``error`` / ``message`` / ``reason`` (or the start of a text body), printable characters only, at
most ``MAX_REASON`` long, with the secret blanked out.

Per request: one deadline of ``timeout_seconds`` (``hand_over``'s); per messenger: at most ``max_in_flight``
requests open (the registry's ``share`` of it), paced by the limit ``im:<name>`` of the registry's
``Limits``. Provider ids are prefixed with the provider's name so that a gateway's ids can
never be mistaken for another provider's in the ledger (receipts find rows by provider id).
"""

from __future__ import annotations

import asyncio
import random
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from topslot.attribution.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSigner
from topslot.channel import Channel
from topslot.channels.base import Message, TextMessage
from topslot.channels.http import (
    SendGate,
    hand_over,
    header,
    json_object,
    parse_retry_after,
    redact,
)
from topslot.channels.http_client import HttpClient
from topslot.channels.limits import Limits, LocalLimits, scaled
from topslot.channels.ratelimit import Pace
from topslot.clock import Clock, SystemClock
from topslot.errors import AmbiguousSendError, PermanentSendError, SendError, TransientSendError
from topslot.settings import Settings, WebhookProvider

PAYLOAD_VERSION = 1
IDEMPOTENCY_HEADER = "Idempotency-Key"
CONTENT_TYPE = "application/json; charset=utf-8"
USER_AGENT = "topslot-im-webhook/1"
HEADERS = (IDEMPOTENCY_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)  # what a gateway checks

BUSY_BACKOFF = 30.0  # seconds after a 429 without Retry-After; jittered up to twice that
MAX_REASON = 200  # characters of a refusal's reason kept in the error (and the ledger's last_error)
MAX_ID = 128  # a gateway id longer than this (or with spaces, controls) is not used
MAX_ANSWER_BYTES = 64 * 1024  # of an answer's body read; the rest is ignored
CONFIG_STATUSES = frozenset({401, 403, 407})


class ImWebhook:
    """The IM ``Messenger`` of one ``kind: webhook`` provider (see the module docstring)."""

    channel: Channel = "im"
    drops_repeats = True  # the gateway must honour Idempotency-Key (docs/channels.md)

    def __init__(
        self,
        name: str,
        *,
        url: str,
        secret: str,
        rate_per_second: float = 20.0,
        timeout: float = 15.0,
        max_in_flight: int = 20,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pace: Pace | None = None,
        jitter: Callable[[], float] = random.random,
    ):
        if not secret:
            raise ValueError("an IM webhook needs its signing secret")
        self.provider = name
        self.url = url
        self._secret = secret
        self._signer = WebhookSigner(secret)
        self.rate_per_second: float | None = rate_per_second
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.gate = SendGate(
            name,
            rate_per_second=rate_per_second,
            max_in_flight=max_in_flight,
            timeout=timeout,
            monotonic=monotonic,
            sleep=sleep,
            pace=pace,
        )
        self.bucket = self.gate.bucket
        self._clock = clock or SystemClock()
        self._sent_second: datetime | None = None  # the second ``_sent_at`` shows
        self._sent_at = ""
        self._wall = wall
        self._jitter = jitter
        self._peer = f"the {name} IM gateway"
        self._http = HttpClient(url, max_in_flight, max_answer_bytes=MAX_ANSWER_BYTES)

    @classmethod
    def from_settings(
        cls, settings: Settings, name: str, clock: Clock | None = None, *, limits: Limits | None = None, **options: Any
    ) -> ImWebhook:
        """``im.<name>`` (a ``kind: webhook`` provider), paced by ``limits`` (``im:<name>``), with its
        ``share`` of ``max_in_flight``."""
        limits = limits or LocalLimits()
        p = settings.im.get(name)
        if not isinstance(p, WebhookProvider) or p.secret is None:
            raise ValueError(f"im.{name} is not a configured webhook provider")
        return cls(
            name,
            url=p.url,
            secret=p.secret.get_secret_value(),
            rate_per_second=limits.own_rate(p.rate_per_second),
            timeout=p.timeout_seconds,
            max_in_flight=scaled(p.max_in_flight, limits.share),
            pace=limits.pace(f"im:{name}", p.rate_per_second),
            clock=clock,
            **options,
        )

    # ------------------------------------------------------------ Messenger

    async def send(self, message: Message) -> str:
        if not isinstance(message, TextMessage):
            raise TypeError("an IM webhook takes text messages")
        self.gate.refuse_if_closed()
        async with self.gate.slot():
            return await self._post(message)

    async def close(self) -> None:
        """Refuse new sends, let the requests in flight finish (each bounded by the timeout), then
        close the HTTP connections. Idempotent."""
        await self.gate.drain()
        await self._http.close()

    # ------------------------------------------------------------ one request

    def payload(self, message: TextMessage) -> dict[str, Any]:
        """The JSON object posted for ``message`` (version ``PAYLOAD_VERSION``)."""
        card = message.card
        now = self._clock.now().replace(microsecond=0)
        if now != self._sent_second:  # formatted once a second, not once a message
            self._sent_second, self._sent_at = now, now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        payload = {
            "version": PAYLOAD_VERSION,
            "provider": self.provider,
            "delivery_id": message.delivery_id,
            "campaign_id": message.campaign_id,
            "recipient": message.recipient_id,
            "text": message.body,
            "card": None
            if card is None
            else {
                "title": card.title,
                "text": message.body,
                "link": card.link,
                "button": card.button,
                "coupon": card.coupon,
            },
            "sent_at": self._sent_at,
        }
        if message.proof_key:  # a proof (topslot send-test): delivery_id 0
            payload["test"] = True
        return payload

    def request(self, message: TextMessage) -> tuple[bytes, dict[str, str]]:
        """The raw body and the headers of the POST for ``message`` (signed now)."""
        body = orjson.dumps(self.payload(message))  # compact UTF-8: json.dumps(ensure_ascii=False)'s bytes
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            IDEMPOTENCY_HEADER: message.key,
            **self._signer.headers(body, int(self._wall())),
        }
        return body, headers

    async def _post(self, message: TextMessage) -> str:
        body, headers = self.request(message)
        async with hand_over(self._peer, self.timeout, secrets=(self._secret,)):
            response = await self._http.post(self.url, body, headers)
        return classify(  # a body cut short still has its status: that says what happened
            self.provider,
            message.delivery_id,
            response.status,
            response.body,
            response.headers,
            secret=self._secret,
            jitter=self._jitter,
        )


def classify(
    name: str,
    delivery_id: int,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    secret: str = "",
    jitter: Callable[[], float] = random.random,
) -> str:
    """The provider id of an accepted message, or raise the ``Messenger`` error for the answer (the
    module docstring's table)."""
    answer = json_object(body)
    if 200 <= status < 300:
        gateway_id = provider_message_id(answer)
        return f"{name}:{gateway_id if gateway_id is not None else delivery_id}"
    raise refusal(name, status, body, answer, headers, secret=secret, jitter=jitter)


def refusal(
    name: str,
    status: int,
    body: bytes,
    answer: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    *,
    secret: str = "",
    jitter: Callable[[], float] = random.random,
) -> SendError:
    """The error for a non-2xx answer."""
    reason = answer_reason(body, answer, secret)
    detail = f"{name} gateway HTTP {status}" + (f": {reason}" if reason else "")
    if status == 429:
        wait = parse_retry_after(header(headers, "Retry-After"))
        if wait is None:
            wait = parse_retry_after(_number(answer.get("retry_after")))
        if wait is None:
            wait = BUSY_BACKOFF * (1 + jitter())
        return TransientSendError(f"{detail} (nothing was forwarded)", code=status, retry_after=wait)
    if status in CONFIG_STATUSES:
        return TransientSendError(
            f"{detail}: the gateway refused the request itself, nothing was forwarded; check im.{name}.secret "
            f"(TOPSLOT_IM__{name.upper()}__SECRET) and im.{name}.url",
            code=status,
        )
    if status == 408:
        return TransientSendError(f"{detail} (the gateway gave up reading the request)", code=status)
    if status == 409:
        return AmbiguousSendError(f"{detail} (a request with this key is still being processed)", code=status)
    if 400 <= status < 500:
        return PermanentSendError(detail, code=status)
    if status >= 500:
        return TransientSendError(f"{detail} (safe to repeat: the gateway drops a repeated key)", code=status)
    return AmbiguousSendError(f"{detail} (unexpected answer)", code=status)


def provider_message_id(answer: Mapping[str, Any]) -> str | None:
    """The gateway's id for the message: ``id`` or ``message_id``, a string or an integer of at most
    ``MAX_ID`` printable ASCII characters without spaces; None otherwise."""
    for key in ("id", "message_id"):
        value = answer.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            value = str(value)
        if isinstance(value, str) and 0 < len(value) <= MAX_ID and value.isascii() and value.isprintable():
            if not any(c.isspace() for c in value):
                return value
    return None


def answer_reason(body: bytes, answer: Mapping[str, Any], secret: str = "") -> str:
    """A refusal's reason for people: the JSON ``error`` / ``message`` / ``reason`` / ``errmsg`` (an
    object's ``message``), else the start of a non-JSON body; printable, bounded, the secret blanked."""
    text = ""
    for key in ("error", "message", "reason", "errmsg", "detail"):
        value = answer.get(key)
        if isinstance(value, Mapping):
            value = value.get("message")
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            text = str(value)
            break
    if not text and not answer and body:
        text = body[: MAX_REASON * 4].decode("utf-8", errors="replace")
        if text.lstrip()[:1] in ("<", "{", "["):  # an HTML error page or JSON we cannot read: not a reason
            text = ""
    return clean_text(redact(text, (secret,)), MAX_REASON)


def clean_text(text: str, limit: int) -> str:
    """One line of printable text, at most ``limit`` characters ("…" when cut)."""
    flat = " ".join("".join(c if unicodedata.category(c)[0] != "C" else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def build(settings: Settings, name: str, clock: Clock, limits: Limits) -> ImWebhook:
    """The registry's builder for ``kind: webhook`` (``topslot.channels.registry._im_kinds``)."""
    return ImWebhook.from_settings(settings, name, clock, limits=limits)
