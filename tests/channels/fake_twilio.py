"""A fake Twilio Messaging API: a real aiohttp server on 127.0.0.1 that answers like Twilio does.

Use it as an async context manager and point ``twilio.base_url`` (or ``client.api.base_url``) at
``.url``::

    async with FakeTwilio() as fake:
        fake.script["+15005550001"] = refuse(21610)           # this number replied STOP
        fake.script["+15005550002"] = [refuse(20429), ACCEPT]   # 429 once, then created
        settings = Settings(twilio={"account_sid": fake.account_sid, "auth_token": fake.auth_token,
                                    "from_number": fake.phone_number, "base_url": fake.url}, ...)
        ...
        assert len(fake.requests) == 1                         # exactly one POST reached Twilio
        await fake.post_status(sid, "delivered")               # the delivery receipt, signed

What it implements, as Twilio does:

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with a form body (``To``, ``From`` or
  ``MessagingServiceSid``, ``Body``, ``StatusCallback`` ...) and HTTP basic auth. Wrong or missing
  credentials: 401 with code 20003 (and ``WWW-Authenticate``); another account's path: 404 with
  20404; a missing ``To`` (21604), sender (21603) or ``Body`` (21602), a ``To`` that is not E.164
  (21211), a body over 1,600 characters (21617): 400 with that code. Created: 201 with the Message
  resource's JSON (``sid`` ``SM`` + 32 hex, ``status`` ``queued``, or ``accepted`` through a
  Messaging Service without ``From``, ``num_segments`` counted as Twilio does for GSM-7 and UCS-2,
  ``date_created`` in RFC 2822, ``uri``, ``subresource_uris`` ...).
- Errors are Twilio's JSON body ``{"code", "message", "more_info", "status"}``.
- WhatsApp, as Twilio takes it: ``To`` ``whatsapp:+E164`` (a ``whatsapp:`` sender needs a ``whatsapp:``
  recipient and the reverse: 30016 otherwise; a bad number after the prefix: 21211); a template as
  ``ContentSid`` (``HX`` + 32 hex, else 21655) with ``ContentVariables`` (a JSON object string of
  string values, else 21656), and then no ``Body`` is needed. The created message keeps
  ``content_sid`` and ``content_variables`` (parsed). A free-form ``Body`` to WhatsApp is created as
  Twilio does (the 63016 failure comes later, in a status callback: ``post_status(sid, "failed",
  63016)``).

The behaviour per ``To`` comes from ``script`` (number → ``Behaviour``, or a list of them used one
request after another, the last one repeating), else ``default`` (``ACCEPT``):

- ``ACCEPT``: created (201);
- ``refuse(code)``: Twilio's error for ``code`` with its HTTP status (``ERRORS``): 21610, 21211,
  21614, 21408, 21612, 21606, 21611, 20003, 20429 (429), 20500 (500), 20503 (503), and WhatsApp's
  63003, 63007, 63014, 63016, 63018, 63024, 63032, 63049 (400) ...;
  ``refuse(20429, retry_after="7")`` adds a ``Retry-After`` header; ``server_error(503)``;
- ``slow(seconds, then=ACCEPT)``: reads the request, waits, then answers as ``then`` (and creates
  the message when ``then`` does, even if the client has gone);
- ``DROP``: reads the whole request, creates the message (the worst case: Twilio took it), then
  closes the connection without answering;
- ``Behaviour(status=201, raw="not json")``: answers that status with that body as it is (nothing
  is created).

It records what the tests assert on: ``requests`` (every request received, in order, with its form,
credentials and the status answered; ``None`` for a dropped one), ``messages`` (created messages by
SID; ``delivered_to()`` lists their ``To``), ``in_flight`` / ``peak_in_flight`` (requests being
handled at once, measured at the server) and ``callbacks`` (the webhooks it posted).

Webhooks, signed with ``X-Twilio-Signature`` exactly as Twilio signs them
(``RequestValidator(auth_token).compute_signature(url, params)``):

- ``await post_status(sid, status, error_code=None)``: the status callback for a created message
  to the ``StatusCallback`` URL it was created with (or ``url=``), with Twilio's fields
  (``MessageSid``, ``MessageStatus``, ``SmsSid``, ``SmsStatus``, ``To``, ``From``, ``AccountSid``,
  ``ApiVersion``, ``MessagingServiceSid`` when used, ``ErrorCode`` when given; for WhatsApp also
  ``ChannelPrefix``, ``ChannelToAddress`` and ``ChannelInstallSid``);
- ``await post_inbound(from_, body, url, to=None)``: an incoming SMS (``MessageSid``,
  ``SmsMessageSid``, ``SmsSid``, ``AccountSid``, ``From``, ``To``, ``Body``, ``NumMedia``,
  ``NumSegments``, ``SmsStatus=received``, ``ApiVersion``, the ``*Country``/``*State``/``*City``/
  ``*Zip`` fields Twilio adds ...); from a ``whatsapp:+E164`` sender, a WhatsApp message instead
  (``To`` ``whatsapp:`` + our number, ``ProfileName``, ``WaId``, ``MessageType``, no location fields).

Both return ``Posted(url, params, status, text)``, also appended to ``callbacks``.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from .fake_http import FakeHttpServer

API_VERSION = "2010-04-01"
MAX_BODY = 1600
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
WHATSAPP = "whatsapp:"
CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")

ERRORS: dict[int, tuple[int, str]] = {
    # code: (HTTP status, message) as Twilio answers them
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource {path} was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    20503: (503, "Service unavailable"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21408: (400, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21606: (
        400,
        "The 'From' phone number provided is not a valid message-capable Twilio phone number "
        "for this destination/account.",
    ),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21611: (400, "This 'From' number has exceeded the maximum number of queued messages"),
    21612: (400, "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number via SMS."),
    21614: (400, "'To' number is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
    21655: (400, "The ContentSid is Invalid."),
    21656: (400, "The ContentVariables Parameter is invalid."),
    30016: (400, "'To' and 'From' channel types are incompatible"),
    # WhatsApp (mostly reported later, in status callbacks; when the API answers them: 400)
    63003: (400, "Channel could not find To address"),
    63007: (400, "Twilio could not find a Channel with the specified From address"),
    63014: (400, "This message could not be delivered because it was blocked by a user action"),
    63016: (400, "Failed to send freeform message because you are outside the allowed window."),
    63018: (400, "Rate limit exceeded for Channel"),
    63024: (400, "Invalid message recipient"),
    63032: (400, "We cannot send this message to this user because of a WhatsApp limitation."),
    63049: (400, "Meta chose not to deliver this WhatsApp marketing message."),
}
_STATUS_CODES = {500: 20500, 503: 20503, 429: 20429}

# GSM 03.38: the basic set (1 septet) and the extension table (2 septets)
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")


def num_segments(body: str) -> int:
    """How many SMS segments Twilio bills for ``body`` (GSM-7: 160, or 153 each when split;
    otherwise UCS-2: 70, or 67 each, counted in UTF-16 code units)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in body):
        units, single, multi = sum(2 if c in _GSM_EXTENDED else 1 for c in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else -(-units // multi)


@dataclass(frozen=True)
class Behaviour:
    """What the fake does with one create request (see the module docstring)."""

    status: int = 201
    code: int | None = None  # Twilio's error code (errors only)
    message: str | None = None  # the error text (default: Twilio's for ``code``)
    delay: float = 0.0  # seconds to wait after reading the request, before answering
    drop: bool = False  # close the connection instead of answering (the message is created)
    retry_after: str | None = None  # a Retry-After header on the answer
    raw: str | None = None  # answer ``status`` with this body instead (nothing is created)

    @property
    def creates(self) -> bool:
        return self.drop or (self.raw is None and 200 <= self.status < 300)


ACCEPT = Behaviour()
DROP = Behaviour(drop=True)


def refuse(code: int, *, retry_after: str | None = None, message: str | None = None) -> Behaviour:
    """Twilio's error answer for ``code``, with its HTTP status (400 for unknown 2xxxx codes)."""
    status, _ = ERRORS.get(code, (400, ""))
    return Behaviour(status=status, code=code, message=message, retry_after=retry_after)


def server_error(status: int = 500) -> Behaviour:
    return Behaviour(status=status, code=_STATUS_CODES.get(status))


def slow(seconds: float, then: Behaviour = ACCEPT) -> Behaviour:
    return replace(then, delay=seconds)


Script = Behaviour | Sequence[Behaviour]


@dataclass
class FakeRequest:
    """One request the fake received."""

    method: str
    path: str
    form: dict[str, str]
    auth: tuple[str, str] | None  # the basic-auth (user, password) sent, if any
    headers: dict[str, str]
    answered: int | None = None  # the HTTP status answered; None while handling or when dropped

    @property
    def to(self) -> str | None:
        return self.form.get("To")


@dataclass
class FakeMessage:
    sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    num_segments: int
    date_created: datetime
    status: str = "queued"
    content_sid: str | None = None  # WhatsApp: the template
    content_variables: dict[str, str] | None = None  # its variables, parsed

    @property
    def whatsapp(self) -> bool:
        return self.to.startswith(WHATSAPP)


@dataclass(frozen=True)
class Posted:
    """A webhook the fake posted, and the answer it got."""

    url: str
    params: dict[str, str]
    status: int
    text: str


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class FakeTwilio(FakeHttpServer):
    account_sid: str = "AC" + "0123456789abcdef" * 2
    auth_token: str = "fake-auth-token-0123456789abcdef"
    phone_number: str = "+15017122661"  # the sender a Messaging Service picks, and the inbound To
    default: Behaviour = ACCEPT

    messages: dict[str, FakeMessage] = field(default_factory=dict, init=False)
    callbacks: list[Posted] = field(default_factory=list, init=False)

    # ------------------------------------------------------------ lifecycle

    @property
    def messages_path(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/{version}/Accounts/{account}/Messages.json", self._create)
        router.add_route("*", "/{tail:.*}", self._not_found)

    # ------------------------------------------------------------ what it saw

    def delivered_to(self) -> list[str]:
        """The ``To`` of every message created, in order."""
        return [m.to for m in self.messages.values()]

    def requests_to(self, to: str) -> list[FakeRequest]:
        return [r for r in self.requests if r.to == to]

    # ------------------------------------------------------------ the API

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return self._error(20404, path=request.path)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        with self._handling():
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            auth = _basic_auth(request.headers.get("Authorization"))
            seen = FakeRequest(request.method, request.path, form, auth, dict(request.headers))
            self.requests.append(seen)
            return self._reply(request, seen, await self._answer(request, form, auth))

    async def _answer(
        self, request: web.Request, form: dict[str, str], auth: tuple[str, str] | None
    ) -> web.Response | None:
        if auth != (self.account_sid, self.auth_token):
            response = self._error(20003)
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        if request.match_info["version"] != API_VERSION or request.match_info["account"] != self.account_sid:
            return self._error(20404, path=request.path)
        to = form.get("To", "")
        if not to:
            return self._error(21604)
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return self._error(21603)
        if not form.get("Body") and not form.get("MediaUrl") and not form.get("ContentSid"):
            return self._error(21602)
        number = to.removeprefix(WHATSAPP)
        if not E164.match(number):
            return self._error(21211, to=to)
        sender = form.get("From")
        if sender is not None and sender.startswith(WHATSAPP) != to.startswith(WHATSAPP):
            return self._error(30016)
        if "ContentSid" in form and not CONTENT_SID.match(form["ContentSid"]):
            return self._error(21655)
        if "ContentVariables" in form and _content_variables(form["ContentVariables"]) is None:
            return self._error(21656)
        if len(form.get("Body", "")) > MAX_BODY:
            return self._error(21617)

        behaviour = self.behaviour(to)
        await self._wait(behaviour.delay)
        message = self._store(form) if behaviour.creates else None
        if behaviour.drop:
            return None
        if message is not None:
            return web.json_response(self._resource(message), status=behaviour.status)
        if behaviour.raw is not None:
            return web.Response(status=behaviour.status, text=behaviour.raw, content_type="application/json")
        response = self._error(behaviour.code, status=behaviour.status, message=behaviour.message, to=to)
        if behaviour.retry_after is not None:
            response.headers["Retry-After"] = behaviour.retry_after
        return response

    def _store(self, form: Mapping[str, str]) -> FakeMessage:
        service = form.get("MessagingServiceSid") or None
        message = FakeMessage(
            sid=new_sid(),
            to=form["To"],
            from_=form.get("From") or None,
            messaging_service_sid=service,
            body=form.get("Body", ""),
            status_callback=form.get("StatusCallback") or None,
            num_segments=num_segments(form.get("Body", "")),
            date_created=datetime.now(UTC),
            status="accepted" if service and not form.get("From") else "queued",
            content_sid=form.get("ContentSid") or None,
            content_variables=_content_variables(form["ContentVariables"]) if "ContentVariables" in form else None,
        )
        self.messages[message.sid] = message
        return message

    def _resource(self, m: FakeMessage) -> dict[str, Any]:
        date = format_datetime(m.date_created.replace(microsecond=0))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{m.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": m.body,
            "date_created": date,
            "date_sent": None,
            "date_updated": date,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": m.from_,
            "messaging_service_sid": m.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(m.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": m.sid,
            "status": m.status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": m.to,
            "uri": f"{uri}.json",
        }

    def _error(
        self, code: int | None, *, status: int | None = None, message: str | None = None, **fill: str
    ) -> web.Response:
        known_status, text = ERRORS.get(code, (500, "Error")) if code is not None else (500, "")
        status = status or known_status
        text = message or text.format_map(_Blank(fill)) or f"HTTP {status}"
        body = {
            "code": code,
            "message": text,
            "more_info": f"https://www.twilio.com/docs/errors/{code}" if code is not None else None,
            "status": status,
        }
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    # ------------------------------------------------------------ webhooks

    async def post_status(
        self, sid: str, status: str, error_code: int | None = None, *, url: str | None = None
    ) -> Posted:
        """POST the status callback Twilio sends when message ``sid`` reaches ``status``
        (``queued``, ``sent``, ``delivered``, ``undelivered``, ``failed`` ...)."""
        message = self.messages[sid]
        target = url or message.status_callback
        if not target:
            raise ValueError(f"message {sid} was created without a StatusCallback; pass url=")
        message.status = status
        sender = message.from_ or (WHATSAPP + self.phone_number if message.whatsapp else self.phone_number)
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": sender,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if message.whatsapp:
            params["ChannelPrefix"] = "whatsapp"
            params["ChannelToAddress"] = message.to.removeprefix(WHATSAPP)
            params["ChannelInstallSid"] = "XE" + "0123456789abcdef" * 2
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return await self.post_signed(target, params)

    async def post_inbound(self, from_: str, body: str, url: str, *, to: str | None = None) -> Posted:
        """POST an incoming SMS from ``from_`` to our number (``to``, default ``phone_number``); from a
        ``whatsapp:`` sender, an incoming WhatsApp message (to ``whatsapp:`` + our number)."""
        sid = new_sid()
        if from_.startswith(WHATSAPP):
            params = {
                "SmsMessageSid": sid,
                "NumMedia": "0",
                "ProfileName": "Ada",
                "MessageType": "text",
                "SmsSid": sid,
                "WaId": from_.removeprefix(WHATSAPP).lstrip("+"),
                "SmsStatus": "received",
                "Body": body,
                "To": to or WHATSAPP + self.phone_number,
                "NumSegments": "1",
                "ReferralNumMedia": "0",
                "MessageSid": sid,
                "AccountSid": self.account_sid,
                "From": from_,
                "ApiVersion": API_VERSION,
            }
            return await self.post_signed(url, params)
        to = to or self.phone_number
        params = {
            "ToCountry": _country(to),
            "ToState": "",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ToCity": "",
            "FromZip": "",
            "SmsSid": sid,
            "FromState": "",
            "SmsStatus": "received",
            "FromCity": "",
            "Body": body,
            "FromCountry": _country(from_),
            "To": to,
            "ToZip": "",
            "NumSegments": str(num_segments(body)),
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "ApiVersion": API_VERSION,
        }
        return await self.post_signed(url, params)

    def signature(self, url: str, params: Mapping[str, str]) -> str:
        """``X-Twilio-Signature`` for a POST of ``params`` to ``url``."""
        return RequestValidator(self.auth_token).compute_signature(url, dict(params))

    async def post_signed(self, url: str, params: Mapping[str, str]) -> Posted:
        """POST ``params`` as a form to ``url``, signed and headed the way Twilio's webhooks are."""
        headers = {
            "X-Twilio-Signature": self.signature(url, params),
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        async with self._client().post(url, data=dict(params), headers=headers) as response:
            posted = Posted(url, dict(params), response.status, await response.text())
        self.callbacks.append(posted)
        return posted


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    try:
        decoded = aiohttp.BasicAuth.decode(header)
    except ValueError:
        return None
    return decoded.login, decoded.password


def _content_variables(text: str) -> dict[str, str] | None:
    """``ContentVariables`` as Twilio takes it: a JSON object of string values (None otherwise)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return value


def _country(number: str) -> str:
    return "US" if number.startswith("+1") else ""
