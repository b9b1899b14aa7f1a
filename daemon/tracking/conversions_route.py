"""``POST /conversions``: the shop's HMAC-signed conversion webhook, served by the tracking server.

The body is read as a stream up to the webhook's own limit (the server's small form limit is for
``/u``); authentication, parsing and attribution live in ``daemon.attribution`` and
``daemon.store.conversions``. Answers are JSON counts and problem positions, never the input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.attribution.webhook import (
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookError,
    error_answer,
    parse_conversion,
    webhook_answer,
)
from daemon.campaign import Campaign
from daemon.clock import Clock
from daemon.links.keys import Keyring
from daemon.logs import get_logger
from daemon.store.conversions import record_conversions
from daemon.tracking.pages import SECURITY_HEADERS

log = get_logger("tracking")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def conversions_handler(
    engine: AsyncEngine,
    key: bytes | str | None,
    keyring: Keyring,
    clock: Clock,
    campaigns: Callable[[], Mapping[str, Campaign]],
) -> Handler:
    """The handler; ``campaigns`` gives the daemon's active campaigns at request time."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read(MAX_BODY_BYTES + 1)
        now = clock.now()
        try:
            parsed = parse_conversion(
                body, request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER), key, now
            )
        except WebhookError as exc:
            status, payload = error_answer(exc)
            log.warning("conversion_webhook_refused", status=status, reason=exc.reason)
        else:
            result = await record_conversions(engine, parsed.inputs, now, campaigns=campaigns(), keyring=keyring)
            status, payload = webhook_answer(parsed, result.recorded, result.duplicates)
        return _json(status, payload)

    return handle


def _json(status: int, payload: dict[str, Any]) -> web.Response:
    return web.json_response(payload, status=status, headers=SECURITY_HEADERS)
