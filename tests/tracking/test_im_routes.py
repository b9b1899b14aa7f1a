"""``POST /im/status`` over real HTTP on a real tracking server, posted by the fake gateway
(fake_im_gateway.py) signed the way docs/channels.md describes, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from channels.fake_im_gateway import SECRET, FakeImGateway
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from store.sending_rows import add_campaign, add_contact, add_leased_row

from topslot.clock import FakeClock, SystemClock
from topslot.delivery import Decision
from topslot.delivery import DeliveryState as S
from topslot.logs import configure_logging
from topslot.runtime.service import Daemon
from topslot.settings import Settings
from topslot.store.dispatch import Outcome, record_outcomes
from topslot.store.receipts import pending_receipts
from topslot.store.schema import deliveries
from topslot.tracking import im_routes as ir
from topslot.tracking.server import TrackingServer
from tracking.fixtures import serving

OTHER_SECRET = "dingtalk-gateway-secret-0123456789"
CAMPAIGN = "spring"
OWNER = "node-a/1"
NOW = datetime.now(UTC).replace(microsecond=0)  # the route checks timestamps against its clock


def im_settings(tmp_path: Path, *, configured: bool = True, **extra: Any) -> Settings:
    im = (
        {
            "wecom": {"kind": "webhook", "url": "https://gw.example.com/wecom", "secret": SECRET},
            "dingtalk": {"kind": "webhook", "url": "https://gw.example.com/dingtalk", "secret": OTHER_SECRET},
        }
        if configured
        else {}
    )
    return Settings(config_dir=tmp_path, var_dir=tmp_path / "var", im=im, **extra)


@asynccontextmanager
async def im_server(engine: AsyncEngine, settings: Settings) -> AsyncIterator[TrackingServer]:
    routes = ir.im_handlers(engine, settings, SystemClock(), body_timeout=2.0)
    async with serving(engine, SystemClock(), routes) as server:
        yield server


@pytest.fixture
async def server(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[TrackingServer]:
    async with im_server(engine, im_settings(tmp_path)) as running:
        yield running


@pytest.fixture
async def gateway() -> AsyncIterator[FakeImGateway]:
    async with FakeImGateway() as fake:
        yield fake


def status_url(server: TrackingServer) -> str:
    return f"{server.url}{ir.STATUS_PATH}"


async def im_world(engine: AsyncEngine, channels: tuple[str, ...] = ("im", "im", "im", "sms")) -> list[int]:
    """A campaign and one contact per channel with one row each, ``sending`` and leased; the delivery ids."""
    ids: list[int] = []
    async with engine.begin() as conn:
        await add_campaign(conn, CAMPAIGN, "Spring", NOW)
        for n, channel in enumerate(channels):
            im_ids = {"wecom": f"user{n}", "dingtalk": f"ding{n}"}
            contact_id = await add_contact(conn, NOW, external_id=f"c{n}", phone=f"+1415555010{n}", im_ids=im_ids)
            ids.append(
                await add_leased_row(
                    conn, campaign_id=CAMPAIGN, contact_id=contact_id, channel=channel, owner=OWNER, at=NOW,
                    timezone="Asia/Shanghai", tz_source="fallback",
                )  # fmt: skip
            )
    return ids


async def record_sent(engine: AsyncEngine, sends: dict[int, str], provider: str = "wecom") -> None:
    """What the dispatcher does after a chunk's sends return: delivery id → provider id."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(deliveries.c.id, deliveries.c.contact_id, deliveries.c.channel))).all()
    by_id = {r.id: r for r in rows}
    outcomes = [
        Outcome(d, by_id[d].contact_id, Decision(S.SENT, provider_id=p), channel=by_id[d].channel, provider=provider)
        for d, p in sends.items()
    ]
    await record_outcomes(engine, CAMPAIGN, outcomes, OWNER, NOW)


async def row(engine: AsyncEngine, delivery_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id))).one()


async def states(engine: AsyncEngine) -> list[tuple[str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(deliveries.c.state, deliveries.c.last_error).order_by(deliveries.c.id))
        return [(r.state, r.last_error) for r in rows]


# ---------------------------------------------------------------- receipts


@pytest.mark.parametrize(
    ("status", "error", "state", "last_error"),
    [
        ("delivered", None, S.DELIVERED, None),
        ("read", None, S.DELIVERED, None),
        ("failed", "user left the group\n\x00", S.BOUNCED, "user left the group"),
        ("FAILED", None, S.BOUNCED, "failed without an error"),
        ("undelivered", "x" * 300, S.BOUNCED, "x" * 199 + "…"),
    ],
)
async def test_a_signed_callback_by_delivery_id_updates_the_row(
    engine: AsyncEngine,
    server: TrackingServer,
    gateway: FakeImGateway,
    status: str,
    error: str | None,
    state: S,
    last_error: str | None,
) -> None:
    d = (await im_world(engine))[0]
    await record_sent(engine, {d: "wecom:gw-1"})
    posted = await gateway.post_status(status_url(server), delivery_id=d, status=status, error=error)
    assert (posted.status, posted.text) == (204, "")
    got = await row(engine, d)
    assert (got.state, got.last_error) == (state, last_error)


async def test_a_callback_by_the_gateways_id_alone(
    engine: AsyncEngine, server: TrackingServer, gateway: FakeImGateway
) -> None:
    a, b, *_ = await im_world(engine)
    await record_sent(engine, {a: "wecom:gw-7", b: f"wecom:{b}"})
    assert (await gateway.post_status(status_url(server), gateway_id="gw-7", status="delivered")).status == 204
    assert (
        await gateway.post_status(status_url(server), delivery_id=b, status="failed", error="blocked")
    ).status == 204
    assert (await row(engine, a)).state == S.DELIVERED
    assert ((await row(engine, b)).state, (await row(engine, b)).last_error) == (S.BOUNCED, "blocked")


async def test_callbacks_are_idempotent_and_the_first_final_one_wins(
    engine: AsyncEngine, server: TrackingServer, gateway: FakeImGateway
) -> None:
    d = (await im_world(engine))[0]
    await record_sent(engine, {d: "wecom:gw-1"})
    for status in ("sent", "delivered", "delivered"):
        assert (await gateway.post_status(status_url(server), delivery_id=d, status=status)).status == 204
    first = await row(engine, d)
    assert (await gateway.post_status(status_url(server), delivery_id=d, status="failed", error="late")).status == 204
    again = await row(engine, d)
    assert (again.state, again.updated_at, again.last_error) == (S.DELIVERED, first.updated_at, None)


@pytest.mark.parametrize("status", ["queued", "sent", "accepted", "whatever"])
async def test_intermediate_statuses_change_nothing(
    engine: AsyncEngine, server: TrackingServer, gateway: FakeImGateway, status: str
) -> None:
    d = (await im_world(engine))[0]
    await record_sent(engine, {d: "wecom:gw-1"})
    assert (await gateway.post_status(status_url(server), delivery_id=d, status=status, error="x")).status == 204
    assert (await row(engine, d)).state == S.SENT
    assert await pending_receipts(engine) == []


async def test_another_providers_or_channels_row_is_left_alone(
    engine: AsyncEngine, server: TrackingServer, gateway: FakeImGateway
) -> None:
    a, b, c, sms = await im_world(engine)
    await record_sent(engine, {a: "dingtalk:gw-1"}, provider="dingtalk")
    await record_sent(engine, {sms: "SM" + "0" * 32}, provider="twilio")
    await record_sent(engine, {b: "wecom:gw-2"})
    url = status_url(server)
    assert (await gateway.post_status(url, delivery_id=a, status="failed")).status == 204  # dingtalk's row
    assert (await gateway.post_status(url, delivery_id=sms, status="failed")).status == 204  # an SMS
    assert (await gateway.post_status(url, delivery_id=10**9, status="failed")).status == 204  # no such row
    assert (await gateway.post_status(url, gateway_id="gw-1", status="failed")).status == 204  # wecom:gw-1: none
    assert [s for s, _ in await states(engine)] == [S.SENT, S.SENT, S.SENDING, S.SENT]
    assert [r.provider_id for r in await pending_receipts(engine)] == ["wecom:gw-1"]  # waits for a row, harmless
    # the other gateway, with its own secret, reaches its own row
    other = await gateway.post_status(url, provider="dingtalk", secret=OTHER_SECRET, delivery_id=a, status="delivered")
    assert other.status == 204 and (await row(engine, a)).state == S.DELIVERED


@pytest.mark.parametrize("by", ["delivery_id", "gateway_id"])
async def test_a_callback_before_the_row_is_recorded_is_applied_when_it_is(
    engine: AsyncEngine, server: TrackingServer, gateway: FakeImGateway, by: str
) -> None:
    a, b, *_ = await im_world(engine)  # rows still `sending`: the sends have not returned yet
    url = status_url(server)
    if by == "delivery_id":
        ids = {a: f"wecom:{a}", b: f"wecom:{b}"}  # a gateway that answers without an id
        await gateway.post_status(url, delivery_id=a, status="delivered")
        await gateway.post_status(url, delivery_id=b, status="failed", error="no such user")
        parked = [f"delivery:{a}", f"delivery:{b}"]  # named by the row: wait under the row's key
    else:
        ids = {a: "wecom:gw-1", b: "wecom:gw-2"}
        await gateway.post_status(url, delivery_id=a, gateway_id="gw-1", status="delivered")
        await gateway.post_status(url, gateway_id="gw-2", status="failed", error="no such user")
        parked = [f"delivery:{a}", "wecom:gw-2"]
    assert sorted(r.provider_id for r in await pending_receipts(engine)) == sorted(parked)
    assert (await row(engine, a)).state == S.SENDING

    await record_sent(engine, ids)
    assert (await row(engine, a)).state == S.DELIVERED
    assert ((await row(engine, b)).state, (await row(engine, b)).last_error) == (S.BOUNCED, "no such user")
    assert await pending_receipts(engine) == []


# ---------------------------------------------------------------- refusals


async def test_unsigned_wrongly_signed_or_stale_callbacks_are_refused(
    engine: AsyncEngine, server: TrackingServer, gateway: FakeImGateway
) -> None:
    d = (await im_world(engine))[0]
    await record_sent(engine, {d: "wecom:gw-1"})
    url = status_url(server)
    # well past the 5-minute window both ways: the requests below take a second or so on a busy machine,
    # and a timestamp 301 s ahead was once only 300 s ahead by the time the server read it
    stale = str(int(datetime.now(UTC).timestamp()) - 400)
    future = str(int(datetime.now(UTC).timestamp()) + 400)
    attempts = [
        await gateway.post_status(url, delivery_id=d, status="failed", sign_it=False),
        await gateway.post_status(url, delivery_id=d, status="failed", secret="not-the-secret-0123456789"),
        await gateway.post_status(url, delivery_id=d, status="failed", secret=OTHER_SECRET),  # dingtalk's, says wecom
        await gateway.post_status(url, delivery_id=d, status="failed", timestamp=stale),
        await gateway.post_status(url, delivery_id=d, status="failed", timestamp=future),
        await gateway.post_status(url, delivery_id=d, status="failed", timestamp="soon"),
        await gateway.post_status(url, delivery_id=d, status="failed", provider="telegram"),
        await gateway.post_status(
            url, delivery_id=d, status="failed", headers={"X-Topslot-Signature": "sha256=" + "0" * 64}
        ),
    ]
    assert [(p.status, p.text) for p in attempts] == [(403, "forbidden\n")] * len(attempts)
    assert (await row(engine, d)).state == S.SENT and await pending_receipts(engine) == []


def signed_body(body: bytes, secret: str = SECRET) -> dict[str, str]:
    from channels.fake_im_gateway import sign

    stamp = str(int(datetime.now(UTC).timestamp()))
    return {"X-Topslot-Timestamp": stamp, "X-Topslot-Signature": sign(secret, stamp, body)}


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"provider": "wecom", "status": "delivered"}, 400),  # neither delivery_id nor id
        ({"provider": "wecom", "delivery_id": 0, "status": "delivered"}, 400),
        ({"provider": "wecom", "delivery_id": -4, "status": "delivered"}, 400),
        ({"provider": "wecom", "delivery_id": True, "status": "delivered"}, 400),
        ({"provider": "wecom", "delivery_id": 2**63, "status": "delivered"}, 400),
        ({"provider": "wecom", "delivery_id": "12a", "status": "delivered"}, 400),
        ({"provider": "wecom", "id": "with space", "status": "delivered"}, 400),
        ({"provider": "wecom", "id": ["gw-1"], "status": "delivered"}, 400),
        ({"provider": "wecom", "delivery_id": 1, "status": 3}, 400),
        ({"provider": "wecom", "delivery_id": 1}, 400),
        ({"provider": "wecom", "delivery_id": 1, "status": "failed", "error": {"x": 1}}, 400),
        ({"provider": "wecom", "delivery_id": "1", "status": "delivered"}, 204),  # a number as text is fine
    ],
)
async def test_malformed_fields_are_400(
    engine: AsyncEngine, server: TrackingServer, gateway: FakeImGateway, data: dict[str, Any], status: int
) -> None:
    await im_world(engine)
    body = json.dumps(data).encode()
    posted = await gateway.post_status(
        status_url(server), status="x", body=body, sign_it=False, headers=signed_body(body)
    )
    assert posted.status == status


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"provider": "wecom", "x": [[[[[1]]]]]}', 400),  # nested deeper than a callback ever is
        (b"\xff\xfe{}", 400),
        (json.dumps({"provider": "wecom", "pad": "x" * 20_000}).encode(), 413),
    ],
)
async def test_bodies_that_are_not_a_small_json_object(
    server: TrackingServer, gateway: FakeImGateway, body: bytes, status: int
) -> None:
    posted = await gateway.post_status(
        status_url(server), status="x", body=body, sign_it=False, headers=signed_body(body)
    )
    assert posted.status == status


async def test_without_a_webhook_provider_the_route_is_404(
    engine: AsyncEngine, tmp_path: Path, gateway: FakeImGateway
) -> None:
    async with im_server(engine, im_settings(tmp_path, configured=False)) as running:
        posted = await gateway.post_status(status_url(running), delivery_id=1, status="delivered")
    assert posted.status == 404


async def test_refusals_and_receipts_are_logged_without_the_secret(
    engine: AsyncEngine, server: TrackingServer, gateway: FakeImGateway
) -> None:
    d = (await im_world(engine))[0]
    await record_sent(engine, {d: "wecom:gw-1"})
    stream = io.StringIO()
    configure_logging("debug", "json", secrets=[SECRET, OTHER_SECRET], stream=stream)
    try:
        await gateway.post_status(status_url(server), delivery_id=d, status="failed", sign_it=False)
        await gateway.post_status(status_url(server), delivery_id=d, status="failed", error="user left")
        await gateway.post_status(status_url(server), delivery_id=10**9, status="failed")
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    wanted = [e for e in events if e["event"].startswith("im_")]
    assert [(e["event"], e.get("status") or e.get("result")) for e in wanted] == [
        ("im_webhook_refused", 403),
        ("im_bounced", "applied"),
        ("im_receipt_unmatched", None),
    ]
    assert wanted[1]["delivery_id"] == d and wanted[1]["error"] == "user left"
    assert SECRET not in stream.getvalue()


# ---------------------------------------------------------------- the daemon serves it


async def test_the_daemon_serves_the_im_status_route(tmp_path: Path, gateway: FakeImGateway) -> None:
    (tmp_path / "campaigns").mkdir()
    s = im_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'var' / 'topslot.db'}", tracking_port=0)
    daemon = Daemon(s, watch=False, schedule=False, handle_signals=False, configure_logs=False)
    async with daemon:
        server = daemon.tracking
        assert server is not None and daemon.engine is not None
        posted = await gateway.post_status(f"{server.url}{ir.STATUS_PATH}", gateway_id="gw-3", status="delivered")
        assert posted.status == 204
        assert [r.provider_id for r in await pending_receipts(daemon.engine)] == ["wecom:gw-3"]


# ---------------------------------------------------------------- pure parts


def test_parse_callback() -> None:
    got = ir.parse_callback("wecom", {"delivery_id": 7, "id": 99, "status": " Failed ", "error": " a\tb "})
    assert got == ir.StatusCallback("wecom", 7, "99", "failed", "a b")
    assert (got.state, got.provider_id) == (S.BOUNCED, "wecom:99")
    assert ir.parse_callback("wecom", {"delivery_id": 7, "status": "delivered", "error": ""}).provider_id == "wecom:7"


def test_one_route_and_the_secrets_of_webhook_providers_only(tmp_path: Path) -> None:
    handlers = ir.im_handlers(None, im_settings(tmp_path), FakeClock(NOW - timedelta(days=1)))  # type: ignore[arg-type]
    assert set(handlers) == {ir.STATUS_PATH}
    assert ir.webhook_secrets(im_settings(tmp_path)) == {"wecom": SECRET, "dingtalk": OTHER_SECRET}
