"""IM through a Telegram bot: the Bot API's ``sendMessage`` (``POST {base_url}/bot{token}/sendMessage``).

``TelegramBot.send(message)`` posts one message to the chat ``message.recipient_id`` (the contact's
``im_<name>`` id: a numeric chat id, or ``@channelname``) and returns ``"<chat_id>:<message_id>"``,
or raises exactly one of the ``Messenger`` errors. Telegram has no idempotency key, so a POST is
never repeated here (``HttpClient`` retries nothing, not even on a stale keep-alive connection).

The message (``render``), ``parse_mode: HTML``:

- text: the card's title in bold, a blank line, then the body; both HTML-escaped (``& < >``: the
  body is plain text from a sandboxed template, never markup);
- the card's (already tracked) landing link as one inline-keyboard URL button labelled
  ``card.button``; no card, no keyboard;
- ``disable_web_page_preview``: the link is the button, not a preview.

How an answer is classified (``classify``; Telegram answers ``{"ok": false, "error_code",
"description", "parameters": {"retry_after"}}`` and says its codes may change, so the description
and ``retry_after`` decide first, the HTTP status after):

=========================================================  ========================================
HTTP 429, or any answer with ``parameters.retry_after``      ``TransientSendError``, ``retry_after``
(flood control)                                              from it (else 30–60 s, jittered)
"bot was blocked by the user", "user is deactivated",        ``PermanentSendError(suppress=True,
"bot can't initiate conversation", "bot was kicked from"     suppress_reason=IM_BLOCKED)``
"chat not found", and any other 4xx                          ``PermanentSendError``
HTTP 401 or 404 (the bot's token, or a wrong base_url):      ``TransientSendError`` ("check
nothing was sent                                             im.<name>.token")
any 5xx                                                      ``AmbiguousSendError``
a 2xx with ``ok: false`` or without ``result.message_id``,   ``AmbiguousSendError``
any other status (1xx, 3xx)
no connection (refused, DNS, TLS, connect timeout):          ``TransientSendError``
nothing of the request was written
a timeout or dropped connection after it was written         ``AmbiguousSendError``
=========================================================  ========================================

"Written or not" is observed by ``topslot.channels.http`` (``HttpClient``, ``hand_over``), shared
with the Twilio messengers. The token is part of the URL: it is never logged and ``hand_over``
removes it from every error message it builds.

Per request: one ``asyncio.timeout(timeout_seconds)``. Per messenger: at most ``max_in_flight``
requests open (the registry's ``share`` of it), paced by the limit ``im:<name>`` of the registry's
``Limits`` (Telegram takes about 30 messages a second per bot). The client connects on the
first send; ``close()`` closes its connections.
"""

from __future__ import annotations

import asyncio
import html
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from topslot.channel import Channel
from topslot.channels.base import Message, Messenger, TextMessage
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
from topslot.clock import Clock
from topslot.delivery import SuppressionReason
from topslot.errors import AmbiguousSendError, PermanentSendError, SendError, TransientSendError
from topslot.settings import Settings, TelegramProvider

TELEGRAM_API = "https://api.telegram.org"

BUSY_BACKOFF = 30.0
"""Seconds to wait after a 429 without ``retry_after``; jittered up to twice that."""

BLOCKED = (
    "bot was blocked by the user",
    "user is deactivated",
    "bot can't initiate conversation",
    "bot was kicked from",  # the group, supergroup or channel removed the bot
)
"""Descriptions (lower case, anywhere in Telegram's text) that mean this chat is gone for the bot."""

_CHAT_ID = re.compile(r"^-?[0-9]{1,20}$")


class TelegramBot:
    """The IM ``Messenger`` over one Telegram bot (see the module docstring)."""

    channel: Channel = "im"
    drops_repeats = False

    def __init__(
        self,
        *,
        token: str,
        name: str = "telegram",
        base_url: str = TELEGRAM_API,
        rate_per_second: float = 25.0,
        timeout: float = 15.0,
        max_in_flight: int = 20,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pace: Pace | None = None,
        jitter: Callable[[], float] = random.random,
    ):
        if not token:
            raise ValueError("TelegramBot needs the bot's token")
        self.provider = name
        self.base_url = base_url.rstrip("/")
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
        self._url = f"{self.base_url}/bot{token}/sendMessage"  # holds the token: never in a message or log
        self._secrets = (token, quote(token, safe=""))
        self._jitter = jitter
        self._http = HttpClient(self.base_url, max_in_flight)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}

    def __repr__(self) -> str:
        return f"TelegramBot(provider={self.provider!r}, base_url={self.base_url!r})"

    @classmethod
    def from_settings(
        cls, settings: Settings, name: str, *, limits: Limits | None = None, **options: Any
    ) -> TelegramBot:
        """The ``im.<name>`` settings (a ``telegram`` kind), with ``share`` of the rate and of
        ``max_in_flight``."""
        p = settings.im.get(name)
        if not isinstance(p, TelegramProvider):
            raise ValueError(f"im.{name} is not a telegram provider")
        if p.token is None:
            raise ValueError(f"im.{name} has no bot token: set TOPSLOT_IM__{name.upper()}__TOKEN")
        limits = limits or LocalLimits()
        return cls(
            token=p.token.get_secret_value(),
            name=name,
            base_url=p.base_url,
            rate_per_second=limits.own_rate(p.rate_per_second),
            timeout=p.timeout_seconds,
            max_in_flight=scaled(p.max_in_flight, limits.share),
            pace=limits.pace(f"im:{name}", p.rate_per_second),
            **options,
        )

    # ------------------------------------------------------------ Messenger

    async def send(self, message: Message) -> str:
        if not isinstance(message, TextMessage):
            raise TypeError("Telegram takes text messages")
        self.gate.refuse_if_closed()
        async with self.gate.slot():
            return await self._post(message)

    async def close(self) -> None:
        """Refuse new sends, let the requests in flight finish (each is bounded by the timeout),
        then close the HTTP connections. Idempotent."""
        await self.gate.drain()
        await self._http.close()

    # ------------------------------------------------------------ one request

    async def _post(self, message: TextMessage) -> str:
        chat = message.recipient_id
        payload = json.dumps(render(message), ensure_ascii=False).encode()
        async with hand_over("Telegram", self.timeout, secrets=self._secrets):
            response = await self._http.post(self._url, payload, self._headers)
        status, headers, answer = response.status, response.headers, json_object(response.body)
        if "description" in answer:  # a proxy's answer might quote the URL
            answer["description"] = redact(str(answer["description"]), self._secrets)
        if 200 <= status < 300:
            result = answer.get("result")
            message_id = result.get("message_id") if isinstance(result, dict) else None
            if answer.get("ok") is not True or not _is_int(message_id):  # sent or not, we cannot tell
                raise AmbiguousSendError(
                    f"Telegram answered {status} without a message_id ({_describe(answer) or 'no description'})",
                    code="no_message_id",
                )
            return f"{chat}:{message_id}"
        raise classify(
            status, answer, name=self.provider, retry_after=header(headers, "Retry-After"), jitter=self._jitter
        )


def render(message: TextMessage) -> dict[str, Any]:
    """The ``sendMessage`` parameters for ``message`` (the module docstring's format)."""
    card = message.card
    text = html.escape(message.body, quote=False)
    if card is not None and card.title:
        text = f"<b>{html.escape(card.title, quote=False)}</b>\n\n{text}"
    chat = message.recipient_id
    payload: dict[str, Any] = {
        "chat_id": int(chat) if _CHAT_ID.match(chat) else chat,
        "text": text,
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
    }
    if card is not None:
        payload["reply_markup"] = {"inline_keyboard": [[{"text": card.button, "url": card.link}]]}
    return payload


def classify(
    status: int,
    answer: Mapping[str, Any],
    *,
    name: str = "telegram",
    retry_after: str | None = None,
    jitter: Callable[[], float] = random.random,
) -> SendError:
    """The ``Messenger`` error for a non-2xx answer from the Bot API (the module docstring's table).
    ``answer``: Telegram's JSON (``{}`` when unreadable); ``retry_after``: the HTTP header, if any."""
    error_code = answer.get("error_code")
    code = error_code if isinstance(error_code, int) and not isinstance(error_code, bool) else status
    description = _describe(answer)
    detail = f"Telegram HTTP {status}" + (f": {description}" if description else "")
    lowered = description.lower()
    parameters = answer.get("parameters")
    flood_wait = parse_retry_after(parameters.get("retry_after")) if isinstance(parameters, dict) else None
    if flood_wait is not None or status == 429 or code == 429:  # a 5xx's Retry-After does not make it safe
        wait = flood_wait if flood_wait is not None else parse_retry_after(retry_after)
        if wait is None:
            wait = BUSY_BACKOFF * (1 + jitter())
        return TransientSendError(f"{detail} (flood control, nothing was sent)", code=code, retry_after=wait)
    if any(phrase in lowered for phrase in BLOCKED):
        return PermanentSendError(
            f"{detail} (the recipient blocked or left the bot)",
            code=code,
            suppress=True,
            suppress_reason=SuppressionReason.IM_BLOCKED,
        )
    if "chat not found" in lowered:
        return PermanentSendError(detail, code=code)
    if status in (401, 404):
        return TransientSendError(
            f"{detail}: Telegram refused the bot, nothing was sent; check im.{name}.token "
            f"(TOPSLOT_IM__{name.upper()}__TOKEN) and im.{name}.base_url",
            code=code,
        )
    if status >= 500:
        return AmbiguousSendError(f"{detail} (Telegram may have sent the message)", code=code)
    if 400 <= status < 500:
        return PermanentSendError(detail, code=code)
    return AmbiguousSendError(f"{detail} (unexpected answer; check im.{name}.base_url)", code=code)


def build(settings: Settings, name: str, clock: Clock, limits: Limits) -> Messenger:
    """The registry's builder for ``im.<name>`` of kind ``telegram``."""
    return TelegramBot.from_settings(settings, name, limits=limits)


def _describe(answer: Mapping[str, Any]) -> str:
    description = answer.get("description")
    return " ".join(str(description).split()) if description else ""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
