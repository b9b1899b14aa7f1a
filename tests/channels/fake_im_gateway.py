"""A fake IM gateway for ``kind: webhook`` providers: a real aiohttp server on 127.0.0.1 that checks
requests the way ``docs/channels.md`` tells a gateway to, and answers as scripted.

Use it as an async context manager and point ``im.<name>.url`` at ``.url``::

    async with FakeImGateway() as fake:
        fake.script["zhangsan"] = refuse(404, "unknown user")            # by recipient id
        fake.script["lisi"] = [rate_limited("7"), ACCEPT]                 # 429 once, then forwarded
        settings = Settings(im={"wecom": {"kind": "webhook", "url": fake.url, "secret": fake.secret}})
        ...
        assert [m.recipient for m in fake.messages.values()] == ["lisi"]  # forwarded once
        await fake.post_status(tracking_url, delivery_id=42, status="delivered")  # signed callback

What it checks on every ``POST /send`` (``path``), as a real gateway should:

- ``X-Topslot-Timestamp`` / ``X-Topslot-Signature`` with the documented verifier (``verify``:
  ``sha256=`` + hex HMAC-SHA256 of ``timestamp + "." + raw body``, timestamp within 5 minutes of its
  own clock): otherwise 401 ``{"error": "bad signature"}`` (the request is recorded with
  ``verified=False`` and nothing is forwarded);
- an ``Idempotency-Key`` header and a JSON body with ``version`` 1, ``delivery_id``, ``recipient`` and
  ``text``: otherwise 400 ``{"error": ...}``;
- a key it has already forwarded: the first answer again (``200`` with the same ``id``) and nothing is
  forwarded again (``duplicates`` counts them).

The behaviour per ``recipient`` comes from ``script`` (recipient → ``Behaviour``, or a list used one
request after another, the last one repeating), else ``default`` (``ACCEPT``):

- ``ACCEPT``: forwarded, ``200 {"id": "gw-<n>", "duplicate": false}`` (``accept(id_field="message_id")``
  or ``accept(id_field=None)`` for gateways that name it differently or not at all);
- ``refuse(status, reason)``: ``status`` with ``{"error": reason}``, nothing forwarded;
- ``rate_limited(retry_after="7")``: 429 with ``Retry-After`` (``None``: without), nothing forwarded;
- ``server_error(status=500, forwarded=False)``: a 5xx; ``forwarded=True`` forwards the message and
  remembers its key first (a gateway that crashed after forwarding: a retry gets the 200);
- ``slow(seconds, then=ACCEPT)``: reads the request, waits, then answers as ``then`` (forwarding when
  ``then`` does, even if the client has gone);
- ``DROP``: reads the whole request, forwards it, then closes the connection without answering;
- ``Behaviour(status=200, raw="not json")``: that status with that body as it is.

What the tests assert on: ``requests`` (every request, in order: headers, raw body, parsed payload,
``verified``, ``duplicate``, the status answered or ``None`` when dropped), ``messages`` (forwarded
messages by idempotency key, in order; ``delivered_to()`` lists their ``provider:recipient``),
``duplicates``, ``in_flight`` / ``peak_in_flight`` and ``callbacks`` (the status callbacks it posted).

``post_status(url, status=..., delivery_id=... | gateway_id=..., error=None)`` posts a signed
``POST /im/status`` callback the way the docs describe (``sign_it=False``, ``secret=``, ``timestamp=``
and ``body=`` make broken ones) and returns ``Posted(status, text)``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from .fake_http import FakeHttpServer

SECRET = "fake-gateway-secret-0123456789abcdef"
MAX_SKEW_SECONDS = 300


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Topslot-Signature`` value: what ``docs/channels.md``'s verifier recomputes."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float | None = None) -> bool:
    """The verifier docs/channels.md gives gateways, as written there: the signature matches and the
    timestamp is within 5 minutes."""
    if not timestamp or not signature or not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW_SECONDS:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={mac}".encode(), signature.strip().lower().encode())


@dataclass(frozen=True)
class Behaviour:
    """What the fake does with one request (see the module docstring)."""

    status: int = 200
    reason: str | None = None  # the error text of a refusal
    delay: float = 0.0  # seconds to wait after reading the request, before answering
    drop: bool = False  # close the connection instead of answering (the message is forwarded)
    retry_after: str | None = None  # a Retry-After header on the answer
    forwarded: bool | None = None  # forward the message (default: for 2xx and drops)
    id_field: str | None = "id"  # the answer's name for the gateway's id (None: no id)
    raw: str | None = None  # answer ``status`` with this body instead

    @property
    def forwards(self) -> bool:
        if self.forwarded is not None:
            return self.forwarded
        return self.drop or (self.raw is None and 200 <= self.status < 300)


ACCEPT = Behaviour()
DROP = Behaviour(drop=True)


def accept(id_field: str | None = "id") -> Behaviour:
    return Behaviour(id_field=id_field)


def refuse(status: int = 400, reason: str = "refused") -> Behaviour:
    return Behaviour(status=status, reason=reason)


def rate_limited(retry_after: str | None = "7") -> Behaviour:
    return Behaviour(status=429, reason="too many requests", retry_after=retry_after)


def server_error(status: int = 500, *, forwarded: bool = False) -> Behaviour:
    return Behaviour(status=status, reason="internal error", forwarded=forwarded)


def slow(seconds: float, then: Behaviour = ACCEPT) -> Behaviour:
    return replace(then, delay=seconds)


Script = Behaviour | Sequence[Behaviour]


@dataclass
class GatewayRequest:
    """One request the fake received."""

    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any] | None  # the JSON body, when it was one
    verified: bool
    key: str | None  # the Idempotency-Key header
    duplicate: bool = False  # a key already forwarded: answered again, not forwarded
    answered: int | None = None  # the HTTP status answered; None while handling or when dropped

    @property
    def recipient(self) -> str | None:
        value = (self.payload or {}).get("recipient")
        return value if isinstance(value, str) else None


@dataclass
class GatewayMessage:
    """A message the gateway forwarded (to WeCom, DingTalk ...): the payload as received."""

    key: str
    gateway_id: str
    payload: dict[str, Any]
    answer: dict[str, Any]  # the 2xx answer, repeated for a duplicate key

    @property
    def recipient(self) -> str:
        return str(self.payload["recipient"])

    @property
    def to(self) -> str:
        return f"{self.payload['provider']}:{self.payload['recipient']}"


@dataclass(frozen=True)
class Posted:
    """A callback the fake posted, and the answer it got."""

    url: str
    body: bytes
    status: int
    text: str


@dataclass
class FakeImGateway(FakeHttpServer):
    secret: str = SECRET
    provider: str = "wecom"  # the provider name its callbacks carry
    default: Behaviour = ACCEPT
    path: str = "/send"

    messages: dict[str, GatewayMessage] = field(default_factory=dict, init=False)
    callbacks: list[Posted] = field(default_factory=list, init=False)
    duplicates: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The URL to configure as ``im.<name>.url``."""
        return f"http://{self.host}:{self.port}{self.path}"

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(self.path, self._receive)

    # ------------------------------------------------------------ what it saw

    def delivered_to(self) -> list[str]:
        """``provider:recipient`` of every forwarded message, in order (the messenger's ``to``)."""
        return [m.to for m in self.messages.values()]

    def requests_for(self, recipient: str) -> list[GatewayRequest]:
        return [r for r in self.requests if r.recipient == recipient]

    # ------------------------------------------------------------ the gateway

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        with self._handling():
            body = await request.read()
            headers = dict(request.headers)
            verified = verify(
                self.secret,
                body,
                request.headers.get("X-Topslot-Timestamp"),
                request.headers.get("X-Topslot-Signature"),
            )
            payload = _json(body)
            key = request.headers.get("Idempotency-Key")
            seen = GatewayRequest(headers, body, payload, verified, key)
            self.requests.append(seen)
            return self._reply(request, seen, await self._answer(seen))

    async def _answer(self, seen: GatewayRequest) -> web.Response | None:
        if not seen.verified:
            return _error(401, "bad signature")
        payload = seen.payload
        if not seen.key:
            return _error(400, "missing Idempotency-Key")
        if payload is None or payload.get("version") != 1:
            return _error(400, "not a version 1 payload")
        if not isinstance(payload.get("delivery_id"), int) or not payload.get("recipient") or "text" not in payload:
            return _error(400, "missing delivery_id, recipient or text")
        first = self.messages.get(seen.key)
        if first is not None:  # already forwarded: the first answer again, nothing forwarded
            seen.duplicate = True
            self.duplicates += 1
            return web.json_response(first.answer)
        behaviour = self.behaviour(str(payload["recipient"]))
        await self._wait(behaviour.delay)
        message = self._forward(seen.key, payload, behaviour) if behaviour.forwards else None
        if behaviour.drop:
            return None
        if behaviour.raw is not None:
            return web.Response(status=behaviour.status, text=behaviour.raw, content_type="application/json")
        if 200 <= behaviour.status < 300 and message is not None:
            return web.json_response(message.answer, status=behaviour.status)
        response = _error(behaviour.status, behaviour.reason or f"HTTP {behaviour.status}")
        if behaviour.retry_after is not None:
            response.headers["Retry-After"] = behaviour.retry_after
        return response

    def _forward(self, key: str, payload: dict[str, Any], behaviour: Behaviour) -> GatewayMessage:
        gateway_id = f"gw-{next(self._ids)}"
        answer: dict[str, Any] = {"duplicate": False}
        if behaviour.id_field is not None:
            answer[behaviour.id_field] = gateway_id
        message = GatewayMessage(key, gateway_id, payload, answer)
        self.messages[key] = message
        return message

    # ------------------------------------------------------------ status callbacks

    async def post_status(
        self,
        url: str,
        *,
        status: str,
        delivery_id: int | None = None,
        gateway_id: str | None = None,
        error: str | None = None,
        provider: str | None = None,
        secret: str | None = None,
        timestamp: str | None = None,
        sign_it: bool = True,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Posted:
        """POST a status callback to ``url`` (``{tracking}/im/status``), signed with ``secret``
        (default: the gateway's) at ``timestamp`` (default: now); ``body`` replaces the JSON built from
        the other arguments, ``sign_it=False`` leaves the signature headers out."""
        if body is None:
            data: dict[str, Any] = {"provider": provider or self.provider, "status": status}
            if delivery_id is not None:
                data["delivery_id"] = delivery_id
            if gateway_id is not None:
                data["id"] = gateway_id
            if error is not None:
                data["error"] = error
            body = json.dumps(data).encode()
        sent = {"Content-Type": "application/json"}
        if sign_it:
            stamp = timestamp or str(int(time.time()))
            sent["X-Topslot-Timestamp"] = stamp
            sent["X-Topslot-Signature"] = sign(secret or self.secret, stamp, body)
        sent.update(headers or {})
        async with self._client().post(url, data=body, headers=sent) as response:
            posted = Posted(url, body, response.status, await response.text())
        self.callbacks.append(posted)
        return posted


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": reason}), content_type="application/json")
