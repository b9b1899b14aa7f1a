"""End to end with real sockets, email and SMS: a campaign with ``channels: [email, sms]`` goes out to
aiosmtpd and to the fake Twilio (the real ``twilio`` client over HTTP); the fake posts signed status
callbacks (delivered, undelivered 30005) and inbound replies (STOP, 退订) to the real tracking server;
a recipient follows the SMS short link (302 with tsid) and buys (signed webhook); a second campaign's
SMS bucket then leaves out every number that bounced or opted out; ``build_report`` shows exactly
those numbers, and the SMS cost is the billed segments × ``costs.sms``. One receipt is posted while
its message is taken by Twilio but not yet recorded by the dispatcher: it waits, then applies."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiosmtpd.controller import Controller
from channels.fake_twilio import FakeTwilio, num_segments
from dispatch.fixtures import DUE, NOW, campaign, settings
from end_to_end_support import (
    DUE2,
    assert_each_email_once,
    import_people,
    ledger_rows,
    second_campaign,
    select_all,
    twilio_settings,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_end_to_end import HUMAN_UA, WEBHOOK_KEY, Inbox, free_port

from topslot.attribution.webhook import signed_headers
from topslot.clock import FakeClock
from topslot.dispatch.service import DispatchService
from topslot.reporting.data import ReportQuery, build_report
from topslot.scheduling.scheduler import BucketScheduler
from topslot.store.schema import (
    consents,
    contacts,
    conversions,
    events,
    provider_receipts,
    suppressions,
)
from topslot.tracking.conversions_route import conversions_handler
from topslot.tracking.server import TrackingOptions, TrackingServer
from topslot.tracking.twilio_routes import twilio_handlers

SMS_BODY = "{{ contact.first_name }}, 20% off today with code {{ coupon }}: {{ track(landing_url) }}"

# name: (email, phone, country, consent_email, consent_sms)
PEOPLE: dict[str, tuple[str, str, str, str, str]] = {
    "ann": ("ann@a.example", "+14155550101", "US", "yes", "yes"),  # SMS delivered; clicks and buys
    "bob": ("bob@b.example", "+14155550102", "US", "yes", "yes"),  # SMS undelivered 30005: suppressed
    "cyd": ("cyd@c.example", "+14155550103", "US", "yes", "yes"),  # SMS delivered, then replies STOP
    "dan": ("", "+8613800138000", "CN", "", "yes"),  # SMS only, in China; replies 退订
    "eve": ("eve@e.example", "+14155550105", "US", "yes", "no"),  # email only: no SMS consent
}
EMAILS = {n for n, p in PEOPLE.items() if p[3] == "yes"}
TEXTS = {n for n, p in PEOPLE.items() if p[4] == "yes"}
SMS_COST = Decimal("0.05")  # per segment
EMAIL_COST = Decimal("0.01")


@dataclass
class HoldingTwilio(FakeTwilio):
    """The fake Twilio, holding back its answer (and the creation) for the numbers of ``hold`` until
    ``release`` is set."""

    hold: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.release = asyncio.Event()

    def sid_to(self, to: str) -> str | None:
        return next((m.sid for m in self.messages.values() if m.to == to), None)

    async def _answer(self, request: web.Request, form: dict[str, str], auth: tuple[str, str] | None) -> Any:
        if form.get("To") in self.hold:
            await self.release.wait()
        return await super()._answer(request, form, auth)


async def import_everybody(engine: AsyncEngine, tmp_path: Path) -> dict[str, int]:
    """The contacts of ``PEOPLE``; returns name → contact id."""
    header = ["external_id", "email", "phone", "first_name", "country", "timezone", "consent_email", "consent_sms"]
    rows = (
        [name, email, phone, name.title(), country, "UTC", consent_email, consent_sms]
        for name, (email, phone, country, consent_email, consent_sms) in PEOPLE.items()
    )
    return await import_people(engine, tmp_path, header, rows)


def both_channels_campaign() -> Any:
    email = campaign().content.email
    return campaign(
        id="mothers-day",
        channels=["email", "sms"],
        audience={"any": [{"consent": "email"}, {"consent": "sms"}]},
        content={"email": email.model_dump(by_alias=True), "sms": {"body": "t/sms.txt.j2"}},
        costs={"email": str(EMAIL_COST), "sms": str(SMS_COST), "currency": "USD", "margin": "0.5"},
    )


def second_sms_campaign() -> Any:
    return second_campaign("sms", {"body": "t/sms.txt.j2"})


async def test_email_and_sms_receipts_replies_click_buy_second_campaign_report(engine, tmp_path: Path) -> None:  # noqa: ANN001, PLR0915
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with HoldingTwilio() as fake:
        s = settings(
            tmp_path,
            smtp.port,
            tracking_port=port,
            tracking_base_url=base,  # Twilio's StatusCallback points at this tracking server
            conversion_webhook_key=WEBHOOK_KEY,
            twilio=twilio_settings(fake),
        )
        (s.templates_dir / "t" / "sms.txt.j2").write_text(SMS_BODY, encoding="utf-8")
        c, c2 = both_channels_campaign(), second_sms_campaign()
        active = {c.id: c, c2.id: c2}
        clock = FakeClock(NOW)
        service = DispatchService(engine, s, clock, node="e2e-sms")
        tracking = TrackingServer(engine, service.keyring, clock, TrackingOptions.from_settings(s))
        tracking.add_route(
            "/conversions", conversions_handler(engine, WEBHOOK_KEY, service.keyring, clock, lambda: active)
        )
        for route, handler in twilio_handlers(engine, s, clock).items():  # as topslot.runtime.service adds them
            tracking.add_route(route, handler)
        await tracking.start()
        try:
            ids = await import_everybody(engine, tmp_path)
            scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
            await service.on_campaigns_changed(active)
            await scheduler.on_campaigns_changed(active)  # both planned now, before anyone opts out
            planned2 = await ledger_rows(engine, c2.id)
            assert {k for k, r in planned2.items() if r["state"] == "planned"} == {(n, "sms") for n in TEXTS}

            # ---- the first campaign: one email and one SMS per consented contact
            clock.set(DUE - timedelta(minutes=1))
            assert await scheduler.fire_bucket(c.id, "email", DUE) == len(EMAILS)
            # Dan's answer is held back: Ann's receipt comes while her SMS is taken but not yet recorded
            fake.hold = {PEOPLE["dan"][1]}
            firing = asyncio.create_task(scheduler.fire_bucket(c.id, "sms", DUE))
            try:
                async with asyncio.timeout(10):
                    while not (ann_sid := fake.sid_to(PEOPLE["ann"][1])):
                        await asyncio.sleep(0.01)
                early = await fake.post_status(ann_sid, "delivered")
                assert early.status == 204
                rows = await ledger_rows(engine, c.id)
                assert (rows[("ann", "sms")]["state"], rows[("ann", "sms")]["provider_id"]) == ("sending", None)
                parked = await select_all(engine, select(provider_receipts.c.provider_id, provider_receipts.c.state))
                assert parked == [{"provider_id": ann_sid, "state": "delivered"}]  # waits for the row
            finally:
                fake.release.set()
                claimed = await firing
            assert claimed == len(TEXTS)
            rows = await ledger_rows(engine, c.id)
            assert set(rows) == {(n, "email") for n in EMAILS} | {(n, "sms") for n in TEXTS}
            assert {k: r["state"] for k, r in rows.items() if r["state"] != "sent"} == {("ann", "sms"): "delivered"}
            assert await select_all(engine, select(provider_receipts)) == []  # applied as the chunk was recorded

            # the SMTP inbox: each email exactly once, with the contact's coupon
            assert_each_email_once(inbox.messages, rows, [PEOPLE[n][0] for n in EMAILS])

            # the fake Twilio: each SMS exactly once, to the right number, with coupon, short link, opt-out line
            assert sorted(r.to for r in fake.requests) == sorted(PEOPLE[n][1] for n in TEXTS)
            assert {r.answered for r in fake.requests} == {201}
            assert all(r.form["StatusCallback"] == f"{base}/twilio/status" for r in fake.requests)
            sms = {m.to: m for m in fake.messages.values()}
            short = re.compile(rf"{re.escape(base)}/s/[A-Za-z0-9_-]{{26}}")
            for name in TEXTS:
                row, message = rows[(name, "sms")], sms[PEOPLE[name][1]]
                assert (row["provider"], row["provider_id"]) == ("twilio", message.sid)
                assert row["coupon_code"] and row["coupon_code"] in message.body
                assert short.search(message.body), message.body
                assert row["segments"] == message.num_segments == num_segments(message.body)
                assert message.body.endswith("回TD退订" if PEOPLE[name][2] == "CN" else "Reply STOP to opt out")
                if name in EMAILS:  # one coupon per contact and campaign, whatever the channel
                    assert row["coupon_code"] == rows[(name, "email")]["coupon_code"]
            # GSM-7 in one segment; the Chinese opt-out line makes Dan's UCS-2, over 70 characters: two
            assert (rows[("ann", "sms")]["segments"], rows[("dan", "sms")]["segments"]) == (1, 2)
            segments = sum(rows[(n, "sms")]["segments"] for n in TEXTS)

            # ---- receipts, posted and signed by the fake to /twilio/status
            clock.advance(timedelta(minutes=2))
            by_number = {PEOPLE[n][1]: n for n in TEXTS}
            sids = {by_number[m.to]: sid for sid, m in fake.messages.items()}
            for name in ("cyd", "dan"):
                assert (await fake.post_status(sids[name], "sent")).status == 204  # not final: nothing changes
                assert (await fake.post_status(sids[name], "delivered")).status == 204
            bounced = await fake.post_status(sids["bob"], "undelivered", error_code=30005)
            assert bounced.status == 204 and bounced.params["ErrorCode"] == "30005"
            late = await fake.post_signed(
                f"{base}/twilio/status",
                {"MessageSid": sids["ann"], "MessageStatus": "undelivered", "ErrorCode": "30005"},
            )
            assert late.status == 204  # signed, but ann's message was delivered already: the first final wins
            forged = {"MessageSid": sids["cyd"], "MessageStatus": "undelivered", "ErrorCode": "30005"}
            wrong_key = FakeTwilio(auth_token="not-the-token").signature(f"{base}/twilio/status", forged)
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{base}/twilio/status", data=forged, headers={"X-Twilio-Signature": wrong_key}
                ) as r:
                    assert r.status == 403
            rows = await ledger_rows(engine, c.id)
            assert {n: rows[(n, "sms")]["state"] for n in TEXTS} == {
                "ann": "delivered", "bob": "bounced", "cyd": "delivered", "dan": "delivered",
            }  # fmt: skip
            assert rows[("bob", "sms")]["last_error"] == "30005 unknown destination handset"
            assert {rows[(n, "email")]["state"] for n in EMAILS} == {"sent"}  # email rows untouched

            # ---- replies: STOP and 退订 (posted and signed by the fake to /twilio/inbound)
            for name, word in (("cyd", "Stop"), ("dan", "退订")):
                posted = await fake.post_inbound(PEOPLE[name][1], word, f"{base}/twilio/inbound")
                assert posted.status == 200 and "<Response/>" in posted.text
            chatter = await fake.post_inbound(PEOPLE["ann"][1], "Thanks, see you Sunday!", f"{base}/twilio/inbound")
            assert chatter.status == 200  # not a keyword: nothing changes
            suppressed = await select_all(
                engine, select(suppressions.c.channel, suppressions.c.address, suppressions.c.reason)
            )
            assert {(r["channel"], r["address"], r["reason"]) for r in suppressed} == {
                ("sms", PEOPLE["bob"][1], "sms_undeliverable"),
                ("sms", PEOPLE["cyd"][1], "sms_stop"),
                ("sms", PEOPLE["dan"][1], "sms_stop"),
            }
            granted = select(contacts.c.external_id).join(consents, consents.c.contact_id == contacts.c.id)
            texting = await select_all(engine, granted.where(consents.c.channel == "sms", consents.c.granted))
            assert {r["external_id"] for r in texting} == {"ann", "bob"}  # STOP withdrew cyd's and dan's consent

            # ---- Ann follows the SMS short link and buys
            clock.advance(timedelta(minutes=20))
            ann_sms = sms[PEOPLE["ann"][1]].body
            async with aiohttp.ClientSession(headers={"User-Agent": HUMAN_UA}) as http:
                async with http.get(short.search(ann_sms).group(0), allow_redirects=False) as r:
                    assert r.status == 302
                    landing = r.headers["Location"]
                assert landing.startswith("https://shop.example.com/landing?x=1")
                tsid = re.search(r"[?&]tsid=([A-Za-z0-9_-]+)", landing).group(1)
                clock.advance(timedelta(minutes=5))
                order = {
                    "order_id": "A-2001", "click_id": tsid, "revenue": "60.00", "discount": "15.00", "units": 1,
                    "currency": "USD", "occurred_at": clock.now().isoformat(),
                }  # fmt: skip
                body = json.dumps(order).encode()
                headers = signed_headers(WEBHOOK_KEY, body, clock.now()) | {"Content-Type": "application/json"}
                async with http.post(f"{base}/conversions", data=body, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["recorded"] == 1
            await tracking.buffer.flush()
            ann_sms_id = rows[("ann", "sms")]["id"]
            clicks = await select_all(engine, select(events).where(events.c.kind == "click"))
            assert [(e["delivery_id"], e["campaign_id"], e["label"]) for e in clicks] == [(ann_sms_id, c.id, "human")]
            (sale,) = await select_all(engine, select(conversions))
            assert (sale["delivery_id"], sale["channel"], sale["campaign_id"]) == (ann_sms_id, "sms", c.id)
            assert (sale["attributed_by"], sale["contact_id"]) == ("click", ids["ann"])

            # ---- the second campaign, a day later: only Ann still gets an SMS
            before = len(fake.requests)
            clock.set(DUE2 - timedelta(minutes=1))
            assert await scheduler.fire_bucket(c2.id, "sms", DUE2) == 1
            rows2 = await ledger_rows(engine, c2.id)
            assert {n: (r["state"], r["skip_reason"]) for (n, _), r in rows2.items()} == {
                "ann": ("sent", None),
                "bob": ("skipped", "suppressed"),  # the 30005 bounce
                "cyd": ("skipped", "suppressed"),  # STOP
                "dan": ("skipped", "suppressed"),  # 退订
            }
            assert [r.to for r in fake.requests[before:]] == [PEOPLE["ann"][1]]
            for name in ("bob", "cyd", "dan"):
                assert len(fake.requests_to(PEOPLE[name][1])) == 1  # the first campaign's, nothing since

            # ---- the report, from the rows
            report = await build_report(engine, ReportQuery(c.id, by="channel", costs=c.costs), clock.now())
            groups = {g.key: g for g in report.groups}
            text_d, mail_d, total = groups["sms"].deliveries, groups["email"].deliveries, report.total
            assert (text_d.planned, text_d.sent, text_d.accepted) == (4, 4, 3)
            assert (text_d.delivered, text_d.bounced, text_d.failed, text_d.unknown) == (3, 1, 0, 0)
            assert (mail_d.planned, mail_d.sent, mail_d.delivered) == (len(EMAILS), len(EMAILS), 0)
            assert total.deliveries.outbox == 0 and total.deliveries.sent == 4 + len(EMAILS)
            assert not s.outbox_dir.exists() or not any(s.outbox_dir.iterdir())  # no file outbox was written
            assert text_d.chargeable_by_channel == {"sms": segments}  # the bounce was billed too
            money = total.money
            assert money.send_cost_by_channel == {"email": EMAIL_COST * len(EMAILS), "sms": SMS_COST * segments}
            assert money.send_cost == EMAIL_COST * len(EMAILS) + SMS_COST * segments
            assert groups["sms"].money.send_cost == SMS_COST * segments
            assert (money.orders, money.purchasers, money.revenue) == (1, 1, Decimal("60.00"))
            assert groups["sms"].money.revenue == Decimal("60.00") and groups["email"].money.revenue == 0
            assert (groups["sms"].clicks.human_unique, groups["email"].clicks.human_total) == (1, 0)
        finally:
            await tracking.close()
            await service.close()
            smtp.stop()
