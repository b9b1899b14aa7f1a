"""A fake Telegram Bot API: a real aiohttp server on 127.0.0.1 that answers ``sendMessage`` like
Telegram does.

Use it as an async context manager and point the provider's ``base_url`` at ``.url``::

    async with FakeTelegram() as fake:
        fake.script["1001"] = BLOCKED                       # this user blocked the bot
        fake.script["1002"] = [flood(7), ACCEPT]            # 429 "retry after 7" once, then sent
        settings = Settings(im={"telegram": {"kind": "telegram", "token": fake.token,
                                             "base_url": fake.url}}, ...)
        ...
        assert len(fake.requests) == 1                      # exactly one POST reached Telegram
        assert fake.messages[0].text == "<b>Title</b>\\n\\nBody"

What it implements, as the Bot API does:

- ``POST`` (or ``GET``) ``/bot<token>/sendMessage`` with the parameters as JSON
  (``application/json``), a form (``application/x-www-form-urlencoded`` or ``multipart/form-data``;
  ``reply_markup`` then is JSON text) or the query string. Every answer is Telegram's envelope:
  ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code", "description"[, "parameters"]}``.
- A token without ``:`` (not a bot token at all): 404 ``Not Found``; another well-formed token:
  401 ``Unauthorized``; another method or path: 404 ``Not Found``.
- Parameters checked as Telegram checks them (400 ``Bad Request: ...``): ``chat_id`` present
  ("chat_id is empty"), ``text`` present ("message text is empty"), at most 4096 characters after
  the markup is parsed ("message is too long"), ``parse_mode`` ``HTML`` / ``MarkdownV2`` /
  ``Markdown`` or none ("unsupported parse_mode"), HTML well-formed: only Telegram's tags (``b``,
  ``strong``, ``i``, ``em``, ``u``, ``ins``, ``s``, ``strike``, ``del``, ``a``, ``code``, ``pre``,
  ``span``, ``tg-spoiler``, ``blockquote``, ``tg-emoji``) and the entities ``&lt; &gt; &amp;
  &quot;`` or numeric ("can't parse entities: ..."); ``reply_markup`` an object whose
  ``inline_keyboard`` is rows of buttons, each with a ``text`` and an ``http(s)``/``tg`` ``url``
  ("can't parse reply keyboard markup JSON object", "inline keyboard button URL '...' is invalid").
- Sent: 200 with the Message: ``message_id`` (counting per chat from 1, as in private chats),
  ``from`` (the bot), ``chat`` (``id``, ``type`` ``private``), ``date`` (Unix seconds), ``text``
  without the markup, ``entities`` for ``b``/``strong`` (offsets in UTF-16 units) and the
  ``reply_markup`` sent.

The behaviour per chat (the ``chat_id`` as text) comes from ``script`` (chat → ``Behaviour``, or a
list of them used one request after another, the last one repeating), else ``default``
(``ACCEPT``):

- ``ACCEPT``: sent (200);
- ``BLOCKED`` (403 "Forbidden: bot was blocked by the user"), ``DEACTIVATED`` (403 "Forbidden: user
  is deactivated"), ``CANT_INITIATE`` (403 "Forbidden: bot can't initiate conversation with a
  user"), ``CHAT_NOT_FOUND`` (400 "Bad Request: chat not found");
- ``flood(seconds)``: 429 "Too Many Requests: retry after N" with ``parameters.retry_after``;
- ``refuse(status, description, retry_after=None)``: any error envelope;
- ``server_error(500)``: Telegram's 5xx envelope; ``Behaviour(status=502, raw="<html>...")``:
  that status and body as they are (nothing is sent);
- ``slow(seconds, then=ACCEPT)``: reads the request, waits, then answers as ``then`` (and sends
  the message when ``then`` does, even if the client has gone);
- ``DROP``: reads the whole request, sends the message (the worst case: Telegram took it), then
  closes the connection without answering.

It records what the tests assert on: ``requests`` (every request received, in order: method, path,
token, content type, the parameters parsed, headers, and the status answered; ``None`` for a
dropped one), ``messages`` (``SentMessage``: chat, message id, the ``text`` exactly as posted,
``parse_mode``, ``reply_markup``, ``disable_web_page_preview``; ``delivered_to()`` lists their
chats), ``in_flight`` / ``peak_in_flight`` (requests being handled at once, at the server).
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from .fake_http import FakeHttpServer

MAX_TEXT = 4096
HTML_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "span", "tg-spoiler"}
    | {"blockquote", "tg-emoji"}
)
PARSE_MODES = frozenset({"HTML", "MarkdownV2", "Markdown"})
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)(\s[^<>]*)?>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#[0-9]+|#x[0-9a-fA-F]+);")
_BUTTON_URL = re.compile(r"^(https?|tg)://[^\s]+$")


@dataclass(frozen=True)
class Behaviour:
    """What the fake does with one ``sendMessage`` (see the module docstring)."""

    status: int = 200
    description: str | None = None  # the error's description (errors only)
    retry_after: int | None = None  # ``parameters.retry_after`` on the error
    delay: float = 0.0  # seconds to wait after reading the request, before answering
    drop: bool = False  # close the connection instead of answering (the message is sent)
    raw: str | None = None  # answer ``status`` with this body instead (nothing is sent)

    @property
    def sends(self) -> bool:
        return self.drop or (self.raw is None and 200 <= self.status < 300)


def refuse(status: int, description: str, *, retry_after: int | None = None) -> Behaviour:
    """Telegram's error envelope: ``error_code`` ``status``, ``description``, ``retry_after``."""
    return Behaviour(status=status, description=description, retry_after=retry_after)


def flood(seconds: int) -> Behaviour:
    """Flood control: 429 with ``parameters.retry_after``."""
    return refuse(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)


def server_error(status: int = 500) -> Behaviour:
    return refuse(status, {502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Internal Server Error"))


def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
    return replace(then or ACCEPT, delay=seconds)


ACCEPT = Behaviour()
DROP = Behaviour(drop=True)
BLOCKED = refuse(403, "Forbidden: bot was blocked by the user")
DEACTIVATED = refuse(403, "Forbidden: user is deactivated")
CANT_INITIATE = refuse(403, "Forbidden: bot can't initiate conversation with a user")
CHAT_NOT_FOUND = refuse(400, "Bad Request: chat not found")

Script = Behaviour | Sequence[Behaviour]


@dataclass
class FakeRequest:
    """One request the fake received."""

    method: str
    path: str
    token: str
    content_type: str
    params: dict[str, Any]  # as parsed (JSON values; a form's values are text)
    headers: dict[str, str]
    answered: int | None = None  # the HTTP status answered; None while handling or when dropped

    @property
    def chat(self) -> str | None:
        chat = self.params.get("chat_id")
        return None if chat is None else str(chat)


@dataclass
class SentMessage:
    """A message the fake "sent"."""

    chat_id: str
    message_id: int
    text: str  # as posted (with its markup)
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    disable_web_page_preview: bool
    date: int


class _BadRequest(Exception):
    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


@dataclass
class FakeTelegram(FakeHttpServer):
    token: str = "123456789:AAFakeTokenForTestsOnly-0123456789abc"
    bot_id: int = 123456789
    bot_username: str = "topslot_test_bot"
    default: Behaviour = ACCEPT

    messages: list[SentMessage] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._next_id: dict[str, int] = {}  # message ids per chat

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/bot{token}/{method}", self._method)
        router.add_route("*", "/{tail:.*}", self._not_found)

    # ------------------------------------------------------------ what it saw

    def delivered_to(self) -> list[str]:
        """The chat of every message sent, in order."""
        return [m.chat_id for m in self.messages]

    def requests_to(self, chat: str) -> list[FakeRequest]:
        return [r for r in self.requests if r.chat == chat]

    # ------------------------------------------------------------ the API

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        return _error(404, "Not Found")

    async def _method(self, request: web.Request) -> web.StreamResponse:
        with self._handling():
            token = request.match_info["token"]
            try:
                params = await _params(request)
            except _BadRequest as exc:
                params, bad = {}, exc
            else:
                bad = None
            seen = FakeRequest(request.method, request.path, token, request.content_type, params, dict(request.headers))
            self.requests.append(seen)
            if bad is not None:
                response: web.Response | None = _error(400, bad.description)
            else:
                response = await self._answer(token, request.match_info["method"], params)
            return self._reply(request, seen, response)

    async def _answer(self, token: str, method: str, params: dict[str, Any]) -> web.Response | None:
        if ":" not in token:
            return _error(404, "Not Found")
        if token != self.token:
            return _error(401, "Unauthorized")
        if method.lower() != "sendmessage":
            return _error(404, "Not Found")
        try:
            chat, text, parse_mode, markup = _check(params)
        except _BadRequest as exc:
            return _error(400, exc.description)

        behaviour = self.behaviour(chat)
        await self._wait(behaviour.delay)
        sent = self._store(chat, params, parse_mode, markup) if behaviour.sends else None
        if behaviour.drop:
            return None
        if sent is not None:
            return _json(200, {"ok": True, "result": self._resource(sent, text, parse_mode)})
        if behaviour.raw is not None:
            return web.Response(status=behaviour.status, text=behaviour.raw, content_type="text/html")
        return _error(behaviour.status, behaviour.description or "Error", retry_after=behaviour.retry_after)

    def _store(
        self, chat: str, params: dict[str, Any], parse_mode: str | None, markup: dict[str, Any] | None
    ) -> SentMessage:
        message_id = self._next_id.get(chat, 0) + 1
        self._next_id[chat] = message_id
        preview = params.get("disable_web_page_preview")
        sent = SentMessage(
            chat_id=chat,
            message_id=message_id,
            text=str(params["text"]),
            parse_mode=parse_mode,
            reply_markup=markup,
            disable_web_page_preview=preview is True or str(preview).lower() == "true",
            date=int(time.time()),
        )
        self.messages.append(sent)
        return sent

    def _resource(self, sent: SentMessage, text: str, parse_mode: str | None) -> dict[str, Any]:
        chat_id: int | str = int(sent.chat_id) if re.fullmatch(r"-?[0-9]+", sent.chat_id) else sent.chat_id
        plain, entities = _entities(text) if parse_mode == "HTML" else (text, [])
        result: dict[str, Any] = {
            "message_id": sent.message_id,
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "Topslot", "username": self.bot_username},
            "chat": {"id": chat_id, "first_name": "Test", "type": "private"},
            "date": sent.date,
            "text": plain,
        }
        if entities:
            result["entities"] = entities
        if sent.reply_markup is not None:
            result["reply_markup"] = sent.reply_markup
        return result


# ---------------------------------------------------------------- parsing and checking


async def _params(request: web.Request) -> dict[str, Any]:
    """The method's parameters: the query string, then the JSON or form body over it."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        raw = await request.read()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                raise _BadRequest("Bad Request: can't parse JSON object") from None
            if not isinstance(body, dict):
                raise _BadRequest("Bad Request: JSON object expected")
            params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    else:
        await request.read()
    return params


def _check(params: dict[str, Any]) -> tuple[str, str, str | None, dict[str, Any] | None]:
    chat = params.get("chat_id")
    if chat is None or chat == "":
        raise _BadRequest("Bad Request: chat_id is empty")
    text = params.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _BadRequest("Bad Request: message text is empty")
    parse_mode = params.get("parse_mode") or None
    if parse_mode is not None and parse_mode not in PARSE_MODES:
        raise _BadRequest("Bad Request: unsupported parse_mode")
    plain = _entities(text)[0] if parse_mode == "HTML" else text
    if len(plain) > MAX_TEXT:
        raise _BadRequest("Bad Request: message is too long")
    return str(chat), text, parse_mode, _markup(params.get("reply_markup"))


def _markup(value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _BadRequest("Bad Request: can't parse reply keyboard markup JSON object") from None
    if not isinstance(value, dict):
        raise _BadRequest("Bad Request: can't parse reply keyboard markup JSON object")
    rows = value.get("inline_keyboard")
    if rows is None:
        return value
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _BadRequest('Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup should be an Array')
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str) or not button["text"]:
                raise _BadRequest("Bad Request: text buttons are unallowed in the inline keyboard")
            url = button.get("url")
            if url is not None and (not isinstance(url, str) or not _BUTTON_URL.match(url)):
                raise _BadRequest(f"Bad Request: inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
    return value


def _unparsable(problem: str, text: str = "", at: int | None = None) -> _BadRequest:
    where = f" at byte offset {len(text[:at].encode())}" if at is not None else ""
    return _BadRequest(f"Bad Request: can't parse entities: {problem}{where}")


def _entities(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse: the plain text and the bold entities (offsets in UTF-16 units);
    ``_BadRequest`` for markup Telegram refuses."""
    plain: list[str] = []
    units = 0
    open_tags: list[tuple[str, int]] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "<":
            tag = _TAG.match(text, i)
            if tag is None:
                raise _unparsable('Unsupported start tag ""', text, i)
            closing, name = tag.group(1) == "/", tag.group(2).lower()
            if name not in HTML_TAGS:
                raise _unparsable(f'Unsupported start tag "{name}"', text, i)
            if closing:
                if not open_tags or open_tags[-1][0] != name:
                    raise _unparsable(f'Unmatched end tag "</{name}>"', text, i)
                _, start = open_tags.pop()
                if name in ("b", "strong") and units > start:
                    entities.append({"offset": start, "length": units - start, "type": "bold"})
            else:
                open_tags.append((name, units))
            i = tag.end()
            continue
        if c == "&":
            entity = _ENTITY.match(text, i)
            if entity is None:
                raise _unparsable("Character '&' is reserved and must be escaped", text, i)
            c = html.unescape(entity.group(0))
            i = entity.end()
        else:
            i += 1
        plain.append(c)
        units += len(c.encode("utf-16-le")) // 2
    if open_tags:
        raise _unparsable(f'Can\'t find end tag corresponding to start tag "{open_tags[-1][0]}"')
    return "".join(plain), sorted(entities, key=lambda e: e["offset"])


def _error(status: int, description: str, *, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return _json(status, body)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, ensure_ascii=False), content_type="application/json")
