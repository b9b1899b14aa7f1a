"""``POST /conversions``: the shop's HMAC-signed conversion webhook, served by the tracking server.

The whole body is read before anything is checked (``read_bounded``): up to the webhook's own
limit, ``MAX_BODY_BYTES`` (the server's small ``client_max_size`` is for ``/u`` forms), whether it
comes with a Content-Length or chunked, in one TCP segment or many; past the limit the request is
refused with 413 at once, and a body still incomplete after ``BODY_TIMEOUT`` seconds gets 408 (a
client trickling bytes, or a broken chunk framing that aiohttp's C parser never reports to the
reader, must not hold a handler and its buffer for ever). Authentication and parsing live in
``topslot.attribution.webhook``, attribution and recording in ``topslot.attribution.record``. Answers
are JSON counts and problem positions, never the input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.record import record_conversions
from topslot.attribution.webhook import (
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookError,
    error_answer,
    parse_conversion,
    webhook_answer,
)
from topslot.campaign import Campaign
from topslot.clock import Clock
from topslot.links.keys import Keyring
from topslot.logs import get_logger
from topslot.tracking.pages import SECURITY_HEADERS

log = get_logger("tracking")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
BODY_TIMEOUT = 60.0  # seconds for the whole body: 1 MiB at ~17 KiB/s


def conversions_handler(
    engine: AsyncEngine,
    key: bytes | str | None,
    keyring: Keyring,
    clock: Clock,
    campaigns: Callable[[], Mapping[str, Campaign]],
    *,
    body_timeout: float = BODY_TIMEOUT,
) -> Handler:
    """The handler; ``campaigns`` gives the daemon's active campaigns at request time."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        now = clock.now()
        try:
            body = await read_bounded(request, MAX_BODY_BYTES, body_timeout)
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


async def read_bounded(request: web.BaseRequest, limit: int, timeout: float = BODY_TIMEOUT) -> bytes:
    """The whole body of ``request``, read to its end; ``WebhookError`` 413 once it passes ``limit`` bytes,
    408 if it has not all arrived within ``timeout`` seconds.

    A declared Content-Length above ``limit`` is refused before reading anything (and before the
    ``100 Continue`` a client sending ``Expect: 100-continue`` waits for). Otherwise (also
    for a chunked body, which declares no length) the stream is read piece by piece as it arrives,
    never asking for more than one byte past the limit, so at most ``limit + 1`` bytes are held.
    The count is of the bytes the handler sees: a compressed body (Content-Encoding) is counted
    decompressed. A body cut short (the client went away) or badly framed is a 400 when aiohttp tells
    the reader; when it does not (its C parser drops a payload whose chunk framing breaks), the
    timeout ends the wait.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)  # before any "100 Continue": a client that asked never sends the body
    if request.version >= (1, 1) and request.headers.get("Expect", "").strip().lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # aiohttp's low-level server does not
    try:
        async with asyncio.timeout(timeout):
            return await _read_to_end(request.content, limit)
    except TimeoutError:
        raise WebhookError(408, f"the body did not arrive within {timeout:g} seconds") from None
    except (ConnectionError, HttpProcessingError):
        raise WebhookError(400, "the body could not be read to its end") from None


async def _read_to_end(stream: StreamReader, limit: int) -> bytes:
    """Everything left in ``stream``, asking for at most one byte past ``limit`` (then 413)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(limit - size + 1):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> WebhookError:
    return WebhookError(413, f"body larger than {limit} bytes")


def _json(status: int, payload: dict[str, Any]) -> web.Response:
    return web.json_response(payload, status=status, headers=SECURITY_HEADERS)
