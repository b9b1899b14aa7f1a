"""End to end with real sockets: a campaign goes out to aiosmtpd, a recipient opens it (pixel over
HTTP), follows a link (302 with tsid), buys with the coupon (signed webhook), another unsubscribes
(one-click POST), and ``build_report`` shows exactly those numbers."""

from __future__ import annotations

import json
import re
import socket
from datetime import timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path

import aiohttp
from aiosmtpd.controller import Controller
from dispatch.fixtures import DUE, NOW, campaign, import_people, ledger_by_email, settings

from topslot.attribution.webhook import signed_headers
from topslot.clock import FakeClock
from topslot.dispatch.service import DispatchService
from topslot.reporting.data import ReportQuery, build_report
from topslot.scheduling.scheduler import BucketScheduler
from topslot.store import ledger
from topslot.tracking.conversions_route import conversions_handler
from topslot.tracking.server import TrackingOptions, TrackingServer

HUMAN_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
WEBHOOK_KEY = "shop-webhook-secret"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802 - aiosmtpd's hook
        self.messages.append(envelope.content)
        return f"250 2.0.0 Ok: queued as A{len(self.messages)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def link(html: str, pattern: str) -> str:
    found = re.search(pattern, html)
    assert found, pattern
    return found.group(0)


async def test_send_open_click_buy_unsubscribe_report(engine, tmp_path: Path) -> None:
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    port = free_port()
    s = settings(
        tmp_path,
        smtp.port,
        tracking_port=port,
        tracking_base_url=f"http://127.0.0.1:{port}",
        conversion_webhook_key=WEBHOOK_KEY,
    )
    c = campaign(costs={"email": "0.01", "currency": "USD", "margin": "0.5"})
    clock = FakeClock(NOW)
    service = DispatchService(engine, s, clock, node="e2e")
    tracking = TrackingServer(engine, service.keyring, clock, TrackingOptions.from_settings(s))
    tracking.add_route(
        "/conversions", conversions_handler(engine, WEBHOOK_KEY, service.keyring, clock, lambda: {c.id: c})
    )
    await tracking.start()
    try:
        await import_people(engine, tmp_path, ["ann@a.example", "bob@b.example", "cyd@c.example"])
        scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
        await service.on_campaigns_changed({c.id: c})
        await scheduler.on_campaigns_changed({c.id: c})
        clock.set(DUE - timedelta(minutes=1))
        assert await scheduler.fire_bucket(c.id, "email", DUE) == 3
        rows = await ledger_by_email(engine)
        assert {r["state"] for r in rows.values()} == {"sent"}
        assert len(inbox.messages) == 3
        mails = {
            m["To"].addresses[0].addr_spec: m
            for m in (message_from_bytes(raw, policy=policy.default) for raw in inbox.messages)
        }
        ann_html = mails["ann@a.example"].get_body(("html",)).get_content()
        bob = mails["bob@b.example"]

        clock.advance(timedelta(minutes=20))  # people read their mail a while after it arrived
        async with aiohttp.ClientSession(headers={"User-Agent": HUMAN_UA}) as http:
            # Ann opens (the pixel) and clicks the offer
            pixel = link(ann_html, rf"http://127\.0\.0\.1:{port}/o/[A-Za-z0-9_-]+\.gif")
            async with http.get(pixel) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/gif"
            clock.advance(timedelta(minutes=1))
            click = link(ann_html, rf"http://127\.0\.0\.1:{port}/c/[A-Za-z0-9_-]+")
            async with http.get(click, allow_redirects=False) as r:
                assert r.status == 302
                landing = r.headers["Location"]
            assert landing.startswith("https://shop.example.com/")
            tsid = re.search(r"[?&]tsid=([A-Za-z0-9_-]+)", landing).group(1)

            # Ann buys with her coupon: the shop's signed webhook
            code = rows["ann@a.example"]["coupon_code"]
            order = {
                "order_id": "A-1001", "coupon_code": code.lower(), "click_id": tsid, "revenue": "80.00",
                "discount": "16.00", "units": 2, "currency": "USD", "occurred_at": clock.now().isoformat(),
            }  # fmt: skip
            body = json.dumps(order).encode()
            headers = signed_headers(WEBHOOK_KEY, body, clock.now()) | {"Content-Type": "application/json"}
            async with http.post(f"http://127.0.0.1:{port}/conversions", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["recorded"] == 1
            async with http.post(f"http://127.0.0.1:{port}/conversions", data=body, headers=headers) as r:
                assert (await r.json())["duplicates"] == 1  # the shop retried: ignored
            forged = signed_headers("wrong-key", body, clock.now())
            async with http.post(f"http://127.0.0.1:{port}/conversions", data=body, headers=forged) as r:
                assert r.status == 401

            # Bob unsubscribes with one click (RFC 8058), as his mail client would
            unsubscribe = re.search(r"<(http://[^>]+/u/[^>]+)>", bob["List-Unsubscribe"]).group(1)
            async with http.get(unsubscribe) as r:  # a link scanner's GET changes nothing
                assert r.status == 200
            assert (await ledger.state_totals(engine)) == {"sent": 3}
            async with http.post(unsubscribe, data="List-Unsubscribe=One-Click",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:  # fmt: skip
                assert r.status == 200
        await tracking.buffer.flush()

        report = await build_report(engine, ReportQuery(c.id, by="channel", costs=c.costs), clock.now())
        total = report.total
        assert (total.deliveries.planned, total.deliveries.sent, total.deliveries.accepted) == (3, 3, 3)
        assert (total.opens.human_unique, total.opens.human_total) == (1, 1)
        assert (total.clicks.human_unique, total.clicks.human_total) == (1, 1)
        assert total.unsubscribes == 1
        money = total.money
        assert (money.orders, money.purchasers, money.units) == (1, 1, 2)
        assert money.revenue == Decimal("80.00") and money.net_revenue == Decimal("80.00")
        assert money.discount_cost == Decimal("16.00")
        assert money.send_cost == Decimal("0.03")  # 3 emails × 0.01
        assert money.gross_profit == Decimal("40.00")  # 80.00 × margin 0.5
        assert money.promotion_cost == Decimal("16.03")  # discount 16.00 + send 0.03
        assert money.roi == Decimal("1.4953")  # (40.00 − 16.03) / 16.03 = 1.49532...
        assert round(total.ctr, 4) == Decimal("0.3333") and total.click_to_open == 1  # 1 of 3; 1 of 1
    finally:
        await tracking.close()
        await service.close()
        smtp.stop()
