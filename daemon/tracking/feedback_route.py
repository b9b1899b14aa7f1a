"""``POST /feedback``: an ESP's bounce, complaint and delivery events (``topslot.bounces.webhook``),
served by the tracking server. The body is read whole and bounded like ``POST /conversions``
(``read_bounded``); each event is matched and recorded as a bounce read by the receiver would be
(``topslot.bounces.record.take``). Answers are JSON counts and problem positions, never the input:
200 when every event was read, 422 when some could not be (the others are recorded), 503 when an
event is about a delivery still being sent (the ESP retries; what was recorded is then a repeat)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.webhook import WebhookError
from topslot.bounces.record import take
from topslot.bounces.webhook import MAX_BODY_BYTES, check, read
from topslot.clock import Clock
from topslot.links.keys import Keyring
from topslot.logs import get_logger
from topslot.settings import BounceSettings
from topslot.tracking.conversions_route import BODY_TIMEOUT, read_bounded
from topslot.tracking.pages import SECURITY_HEADERS

log = get_logger("tracking")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def feedback_handler(
    engine: AsyncEngine, key: str | None, keyring: Keyring, settings: BounceSettings, clock: Clock
) -> Handler:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        now = clock.now()
        try:
            body = await read_bounded(request, MAX_BODY_BYTES, BODY_TIMEOUT)
            check(request.headers, body, key, now)
            batch = read(body)
        except WebhookError as exc:
            log.warning("feedback_webhook_refused", status=exc.status, reason=exc.reason)
            return _json(exc.status, {"error": exc.reason})
        if batch.subscribe_url is not None or not (batch.events or batch.problems):
            # An SNS subscription: an operator opens the URL (topslot never fetches what a body names)
            log.warning("feedback_subscription_confirmation", subscribe_url=batch.subscribe_url)
            return _json(200, {"confirm": "open the SubscribeURL that topslot logged"})
        results: Counter[str] = Counter()
        for feedback in batch.events:
            results[(await take(engine, keyring, settings, feedback, now)).result.value] += 1
        answer: dict[str, object] = dict(sorted(results.items()))
        if batch.problems:
            answer["problems"] = batch.problems[:100]
        if results["pending"]:  # a delivery not recorded as sent yet: the ESP sends the batch again
            return _json(503, answer)
        return _json(422 if batch.problems else 200, answer)

    return handle


def _json(status: int, payload: dict[str, object]) -> web.Response:
    return web.json_response(payload, status=status, headers=SECURITY_HEADERS)
