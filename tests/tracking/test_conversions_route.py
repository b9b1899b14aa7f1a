"""``POST /conversions`` over real TCP: whole bodies read however they arrive, bounded, never echoed.

Bodies are sent the way real clients send them: a Content-Length body written in several pieces
(with pauses, so the server sees several reads), and aiohttp's chunked upload of a generator.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.webhook import MAX_BATCH, MAX_BODY_BYTES, MAX_DEPTH, signed_headers
from topslot.clock import FakeClock
from topslot.store.schema import conversions
from topslot.tracking.conversions_route import conversions_handler
from topslot.tracking.server import TrackingOptions, TrackingServer
from tracking.fixtures import keyring

KEY = "whsec-route-0123456789"
NOW = datetime(2027, 5, 6, 1, 0, tzinfo=UTC)
PIECE = 16 * 1024  # bytes per write of the raw client


def batch(count: int, prefix: str = "B") -> bytes:
    """A batch of ``count`` valid orders, about 230 bytes each (900 → ~200 KiB)."""
    at = (NOW - timedelta(hours=1)).isoformat()
    items = [
        {
            "order_id": f"{prefix}-{i:05d}",
            "occurred_at": at,
            "revenue": "19.90",
            "currency": "USD",
            "units": 1,
            "customer_id": f"shop-customer-{i:08d}",
            "note": "gift wrap, leave at the door, thank you very much",
        }
        for i in range(count)
    ]
    return json.dumps({"conversions": items}).encode()


def signed(body: bytes) -> dict[str, str]:
    return signed_headers(KEY, body, NOW) | {"Content-Type": "application/json"}


@asynccontextmanager
async def webhook_server(engine: AsyncEngine, **handler_options: Any) -> AsyncIterator[TrackingServer]:
    """A real tracking server on 127.0.0.1 serving ``/conversions`` (no campaigns loaded)."""
    clock = FakeClock(NOW)
    ring = keyring()
    tracking = TrackingServer(engine, ring, clock, TrackingOptions(port=0, flush_interval=0.05))
    tracking.add_route("/conversions", conversions_handler(engine, KEY, ring, clock, lambda: {}, **handler_options))
    await tracking.start()
    try:
        yield tracking
    finally:
        await tracking.close()


@pytest.fixture
async def server(engine: AsyncEngine) -> AsyncIterator[TrackingServer]:
    async with webhook_server(engine) as tracking:
        yield tracking


async def stored_orders(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(conversions))


async def pieces(data: bytes, size: int = PIECE) -> AsyncIterator[bytes]:
    """``data`` in pieces with a pause after each: aiohttp sends every piece as one HTTP chunk."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0.001)


async def raw_post(
    server: TrackingServer, body: bytes, headers: dict[str, str], *, declare: int | None = None
) -> tuple[int, bytes, bytes]:
    """POST over a raw socket: the head, then the body in PIECE-sized writes, each drained and followed
    by a short pause; ``Content-Length`` is ``declare`` or the body's length. Returns (status, head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    fields = {"Host": "t", "Connection": "close", **headers, "Content-Length": str(declare or len(body))}
    head = "POST /conversions HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    writer.write(head.encode("ascii"))
    try:
        for start in range(0, len(body), PIECE):
            writer.write(body[start : start + PIECE])
            await writer.drain()
            await asyncio.sleep(0.001)
        head_bytes, content = await asyncio.wait_for(read_answer(reader), 30)
    finally:
        writer.close()
    return int(head_bytes.split(b" ")[1]), head_bytes, content


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response: its head and its Content-Length body (not waiting for the server to close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
    return head, await reader.readexactly(length)


async def chunked_post(server: TrackingServer, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/conversions", data=pieces(body), headers=headers) as r:
            assert "Content-Length" not in r.request_info.headers  # really chunked
            return r.status, await r.json()


async def test_a_900_item_batch_in_many_tcp_writes_is_recorded_in_full(server: TrackingServer, engine) -> None:
    body = batch(900)
    assert 190 * 1024 < len(body) < MAX_BODY_BYTES
    status, head, content = await raw_post(server, body, signed(body))
    assert status == 200, content
    assert json.loads(content) == {"recorded": 900, "duplicates": 0, "rejected": 0}
    assert b"X-Content-Type-Options: nosniff" in head
    assert await stored_orders(engine) == 900


async def test_a_chunked_upload_without_content_length_is_read_whole(server: TrackingServer, engine) -> None:
    body = batch(900, prefix="C")
    assert await chunked_post(server, body, signed(body)) == (200, {"recorded": 900, "duplicates": 0, "rejected": 0})
    assert await chunked_post(server, body, signed(body)) == (200, {"recorded": 0, "duplicates": 900, "rejected": 0})
    assert await stored_orders(engine) == 900


async def test_a_body_of_exactly_the_limit_is_read(server: TrackingServer, engine) -> None:
    items = batch(MAX_BATCH)
    body = items[:-1] + b" " * (MAX_BODY_BYTES - len(items)) + b"}"  # JSON padded with spaces
    assert len(body) == MAX_BODY_BYTES
    status, _, content = await raw_post(server, body, signed(body))
    assert status == 200 and json.loads(content)["recorded"] == MAX_BATCH
    assert await stored_orders(engine) == MAX_BATCH


async def test_over_the_limit_is_413_declared_or_chunked(server: TrackingServer, engine) -> None:
    items = batch(MAX_BATCH)
    body = items[:-1] + b" " * (MAX_BODY_BYTES + 1 - len(items)) + b"}"  # one byte too many
    status, _, content = await raw_post(server, body, signed(body))
    assert status == 413 and json.loads(content) == {"error": f"body larger than {MAX_BODY_BYTES} bytes"}
    status, answer = await chunked_post(server, body, signed(body))  # no Content-Length: counted as read
    assert status == 413 and answer == {"error": f"body larger than {MAX_BODY_BYTES} bytes"}
    endless = b"[" * (3 * MAX_BODY_BYTES)
    status, answer = await chunked_post(server, endless, signed(endless))
    assert status == 413
    assert await stored_orders(engine) == 0


async def test_a_lying_content_length_is_refused_before_the_body(server: TrackingServer) -> None:
    status, _, content = await raw_post(server, b"{}", {}, declare=50 * MAX_BODY_BYTES)
    assert status == 413 and b"{}" not in content


async def test_expect_100_continue_is_answered_and_an_oversized_one_gets_413_first(server: TrackingServer) -> None:
    body = batch(900, prefix="E")
    fields = {**signed(body), "Expect": "100-continue", "Content-Length": str(len(body)), "Connection": "close"}
    head = "POST /conversions HTTP/1.1\r\nHost: t\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head.encode("ascii") + b"\r\n")  # then wait for the go-ahead, as curl does
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30) == b"HTTP/1.1 100 Continue\r\n\r\n"
    for start in range(0, len(body), PIECE):
        writer.write(body[start : start + PIECE])
        await writer.drain()
    answer_head, content = await asyncio.wait_for(read_answer(reader), 30)
    writer.close()
    assert answer_head.startswith(b"HTTP/1.1 200") and json.loads(content)["recorded"] == 900
    fields["Content-Length"] = str(MAX_BODY_BYTES + 1)
    head = "POST /conversions HTTP/1.1\r\nHost: t\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head.encode("ascii") + b"\r\n")  # no body is sent: the answer comes first
    answer_head, content = await asyncio.wait_for(read_answer(reader), 30)
    writer.close()
    assert answer_head.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer_head


async def test_a_compressed_body_is_bounded_by_its_decompressed_size(server: TrackingServer, engine) -> None:
    bomb = gzip.compress(b" " * (8 * MAX_BODY_BYTES))  # ~8 KiB on the wire
    headers = signed(bomb) | {"Content-Encoding": "gzip"}
    status, _, _ = await raw_post(server, bomb, headers)
    assert status == 413
    body = batch(10, prefix="Z")  # a shop that compresses a normal batch, signed over the JSON
    status, _, content = await raw_post(server, gzip.compress(body), signed(body) | {"Content-Encoding": "gzip"})
    assert status == 200 and json.loads(content)["recorded"] == 10


async def test_deep_nesting_and_garbage_are_400_and_never_echoed(server: TrackingServer, engine) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    status, _, content = await raw_post(server, deep, signed(deep))
    assert status == 400 and json.loads(content) == {
        "error": f"the body is not JSON nested at most {MAX_DEPTH} levels deep"
    }
    status, answer = await chunked_post(server, deep, signed(deep))
    assert status == 400
    script = b"<script>alert(1)</script>"
    for garbage in (script * 4000, b"\xff\xfe" + script, b'{"conversions": [' + script + b"]}", b""):
        status, head, content = await raw_post(server, garbage, signed(garbage))
        assert status == 400, (garbage[:20], content)
        assert b"script" not in content and b"script" not in head
    status, _, content = await raw_post(server, deep, {})  # unsigned: refused before it is parsed
    assert status == 401
    assert await stored_orders(engine) == 0


async def test_a_broken_or_abandoned_body_is_refused_and_the_server_carries_on(engine: AsyncEngine) -> None:
    start = b"POST /conversions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with webhook_server(engine, body_timeout=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(start + b"5\r\n{}   \r\n")  # a good chunk: the handler starts reading
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"ZZ<script>\r\n")  # then a chunk size that is not hex: aiohttp drops the payload
        await writer.drain()
        head, content = await asyncio.wait_for(read_answer(reader), 30)
        writer.close()
        assert head.split(b" ")[1] in (b"400", b"408") and b"script" not in head + content
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(start + b"5\r\n{}   \r\n")  # a client that stops sending half-way
        await writer.drain()
        head, content = await asyncio.wait_for(read_answer(reader), 30)
        writer.close()
        assert head.split(b" ")[1] == b"408"
        for cut in (start + b"10\r\n{}", b"POST /conversions HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n{}"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(cut)  # and one that goes away mid-body
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await writer.wait_closed()
        async with aiohttp.ClientSession() as http:  # the server carries on
            async with http.get(f"{server.url}/healthz") as r:
                assert r.status == 200


async def test_an_unpaired_surrogate_is_400_not_a_lost_batch(server: TrackingServer, engine) -> None:
    """``"A\\ud800"`` is valid JSON that no database stores: refused whole (400), never a 500 at insert."""
    good = json.loads(batch(2))
    bad = dict(good, conversions=[*good["conversions"], {**good["conversions"][0], "order_id": "A\ud800"}])
    body = json.dumps(bad).encode()  # ensure_ascii: the surrogate travels as the escape \ud800
    assert b"\\ud800" in body
    status, _, content = await raw_post(server, body, signed(body))
    assert status == 400 and "unpaired surrogate" in json.loads(content)["error"]
    assert await stored_orders(engine) == 0
    body = json.dumps(good).encode()  # the shop fixes it and sends again
    status, _, content = await raw_post(server, body, signed(body))
    assert status == 200 and json.loads(content)["recorded"] == 2
