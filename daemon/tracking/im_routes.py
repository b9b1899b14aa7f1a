"""IM gateways' delivery receipts, served by the tracking server: ``POST /im/status``.

A ``kind: webhook`` gateway (``topslot.channels.im_webhook``) may tell topslot what became of a message
it forwarded. The body is JSON, signed like topslot's own requests to it (the conversion webhook's
scheme, ``topslot.attribution.webhook``) with the secret of the provider the body names::

    X-Topslot-Timestamp: <unix seconds>
    X-Topslot-Signature: sha256=<hex HMAC-SHA256(im.<provider>.secret, timestamp + "." + raw body)>

    {"provider": "wecom", "delivery_id": 42, "id": "<the id the gateway answered, if any>",
     "status": "delivered" | "failed", "error": "<why it failed, optional>"}

Checks, in this order (each refusal changes nothing): no ``kind: webhook`` provider configured → 404;
body over ``MAX_BODY_BYTES`` → 413, not all there within ``BODY_TIMEOUT`` → 408; signature or
timestamp header missing → 403; not a JSON object nested at most ``MAX_DEPTH`` deep → 400; ``provider``
not a configured webhook provider → 403; signature wrong, or timestamp more than 5 minutes off → 403;
fields malformed (no ``delivery_id`` nor ``id``, a ``delivery_id`` that is not a positive integer, an
``id`` that is not up to 128 printable characters, a ``status`` or ``error`` that is not text) → 400.

Then (answered 204):

====================================  ==============================================================
``delivered`` (``read``)              the row → ``delivered``
``failed`` (``undelivered``)          the row → ``bounced``, ``last_error`` the ``error`` (printable,
                                      at most 200 characters) or "failed without an error"
anything else                         nothing (``sent``, ``queued`` ...)
====================================  ==============================================================

The row: with ``delivery_id``, that IM row if this provider took it (another provider's or channel's
row, or none: nothing changes, ``im_receipt_unmatched``); with only ``id``, the row whose provider id
is ``<provider>:<id>`` (what the messenger recorded from the gateway's answer). Only a ``sent`` row
changes and the first final receipt wins, so repeats are harmless; a receipt that beats the
dispatcher's commit is parked and applied when the row is recorded (``topslot.store.receipts``), under
``<provider>:<id>`` when the callback has an ``id``, else ``<provider>:<delivery_id>``: a gateway that
answers sends with an id must send that ``id`` back. IM receipts never suppress an address.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookError, authenticate
from topslot.channels.im_webhook import clean_text, provider_message_id
from topslot.clock import Clock
from topslot.delivery import RECEIPT_STATUSES
from topslot.delivery import DeliveryState as S
from topslot.json_depth import nesting_depth
from topslot.logs import get_logger
from topslot.settings import Settings, WebhookProvider
from topslot.store.receipts import Receipt, Recorded, Result, record_delivery_receipt, record_receipt
from topslot.tracking.conversions_route import read_bounded
from topslot.tracking.pages import SECURITY_HEADERS

log = get_logger("topslot.tracking")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
STATUS_PATH = "/im/status"
MAX_BODY_BYTES = 16 * 1024  # a callback is ~200 bytes
BODY_TIMEOUT = 10.0
MAX_DEPTH = 4  # the callback is one flat object
MAX_ERROR = 200
MAX_DELIVERY_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class StatusCallback:
    """One verified callback's fields."""

    provider: str
    delivery_id: int | None
    gateway_id: str | None
    status: str  # lower-cased, at most 32 characters
    error: str | None

    @property
    def state(self) -> S | None:
        return RECEIPT_STATUSES.get(self.status)

    @property
    def provider_id(self) -> str:
        """The ledger's provider id the row has (or will get) for this message."""
        return f"{self.provider}:{self.gateway_id if self.gateway_id is not None else self.delivery_id}"


def webhook_secrets(settings: Settings) -> dict[str, str]:
    """``{provider name: signing secret}`` of the ``kind: webhook`` IM providers."""
    return {
        name: p.secret.get_secret_value()
        for name, p in settings.im.items()
        if isinstance(p, WebhookProvider) and p.secret is not None
    }


def im_handlers(
    engine: AsyncEngine, settings: Settings, clock: Clock, *, body_timeout: float = BODY_TIMEOUT
) -> dict[str, Handler]:
    """``{path: handler}`` for ``TrackingServer.add_route``; 404 while no webhook provider is configured."""
    secrets = webhook_secrets(settings)

    async def status(request: web.BaseRequest) -> web.StreamResponse:
        if not secrets:
            return _refuse(404, "no webhook provider is configured")
        try:
            body = await read_bounded(request, MAX_BODY_BYTES, body_timeout)
        except WebhookError as exc:
            return _refuse(exc.status, exc.reason)
        signature, timestamp = request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            return _refuse(403, f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
        try:
            data = json_object(body)
        except WebhookError as exc:
            return _refuse(exc.status, exc.reason)
        name = data.get("provider")
        if not isinstance(name, str) or name not in secrets:
            return _refuse(403, "not a configured webhook provider")
        try:
            authenticate(body, signature, timestamp, secrets[name], clock.now())
            callback = parse_callback(name, data)
        except WebhookError as exc:  # the conversion webhook answers 401; a gateway gets 403
            return _refuse(403 if exc.status == 401 else exc.status, exc.reason, provider=name)
        state = callback.state
        if state is None:
            log.debug("im_status_ignored", provider=name, status=callback.status)
            return _no_content()
        receipt = Receipt(
            provider=name,
            provider_id=callback.provider_id,
            state=state,
            error=(callback.error or f"{callback.status} without an error") if state == S.BOUNCED else None,
        )
        now = clock.now()
        if callback.delivery_id is not None:
            done = await record_delivery_receipt(engine, callback.delivery_id, "im", receipt, now)
        else:
            done = await record_receipt(engine, receipt, now)
        _log_receipt(callback, receipt, done)
        return _no_content()

    return {STATUS_PATH: status}


# ---------------------------------------------------------------- pure parts


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (``WebhookError`` 400 when it is not one, or nests too deep)."""
    if nesting_depth(body) > MAX_DEPTH:
        raise WebhookError(400, "not a flat JSON object")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WebhookError(400, "not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise WebhookError(400, "not a JSON object")
    return data


def parse_callback(provider: str, data: Mapping[str, Any]) -> StatusCallback:
    """The fields of an authenticated callback (``WebhookError`` 400 naming the bad field)."""
    delivery_id = _delivery_id(data.get("delivery_id"))
    raw_id = data.get("id")
    gateway_id = None if raw_id is None else provider_message_id({"id": raw_id})
    if raw_id is not None and gateway_id is None:
        raise WebhookError(400, "id must be up to 128 printable characters without spaces")
    if delivery_id is None and gateway_id is None:
        raise WebhookError(400, "delivery_id or id is required")
    status = data.get("status")
    if not isinstance(status, str) or not status.strip() or len(status) > 32:
        raise WebhookError(400, "status must be text (delivered or failed)")
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        raise WebhookError(400, "error must be text or null")
    return StatusCallback(
        provider=provider,
        delivery_id=delivery_id,
        gateway_id=gateway_id,
        status=status.strip().lower(),
        error=(clean_text(error, MAX_ERROR) or None) if error else None,
    )


def _delivery_id(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_DELIVERY_ID:
        return value
    raise WebhookError(400, "delivery_id must be a positive integer")


# ---------------------------------------------------------------- answers and logs


def _log_receipt(callback: StatusCallback, receipt: Receipt, done: Recorded) -> None:
    fields = {"provider": callback.provider, "delivery_id": callback.delivery_id or done.delivery_id}
    if done.result == Result.UNMATCHED:
        log.warning("im_receipt_unmatched", **fields, gateway_id=callback.gateway_id, state=receipt.state)
    elif done.result == Result.DROPPED:
        log.warning("im_receipt_dropped", **fields, provider_id=receipt.provider_id, state=receipt.state)
    elif done.result == Result.PENDING:
        log.info("im_receipt_pending", **fields, provider_id=receipt.provider_id, state=receipt.state)
    elif receipt.state == S.DELIVERED:
        log.debug("im_delivered", **fields, result=done.result)
    else:
        log.info("im_bounced", **fields, result=done.result, error=receipt.error)


def _no_content() -> web.Response:
    return web.Response(status=204, headers=SECURITY_HEADERS)


_REFUSALS = {400: "bad request", 403: "forbidden", 404: "not found", 408: "timeout", 413: "too large"}


def _refuse(status: int, reason: str, *, provider: str | None = None) -> web.Response:
    if status != 404:  # not configured: like any unknown path, not worth a line per scanner
        log.warning("im_webhook_refused", status=status, reason=reason, provider=provider)
    return web.Response(status=status, text=f"{_REFUSALS.get(status, 'refused')}\n", headers=SECURITY_HEADERS)
