"""``POST /feedback``: Amazon SES events (directly and inside SNS envelopes) and the generic shape,
read into the same feedback as returned mail; authenticated by the HMAC headers or HTTP Basic; over
HTTP against the real tracking server, recorded in the ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.webhook import WebhookError, signed_headers
from topslot.bounces.classify import Kind
from topslot.bounces.record import find_delivery
from topslot.bounces.webhook import check, read
from topslot.clock import FakeClock
from topslot.settings import BounceSettings
from topslot.tracking.feedback_route import feedback_handler
from topslot.tracking.server import TrackingOptions, TrackingServer

from .corpus import KEYRING, RCPT, values
from .test_record import NOW, seed, state, suppressed

KEY = "feedback-webhook-key-0123456789"


def ses_bounce(
    delivery_id: int, bounce_type: str = "Permanent", subtype: str = "General", **recipient: Any
) -> dict[str, Any]:
    v = values(delivery_id)
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "bouncedRecipients": [{"emailAddress": RCPT, "action": "failed", **recipient}],
            "timestamp": "2027-05-06T00:30:00.000Z",
            "feedbackId": "0100017a-aaaa-bbbb",
        },
        "mail": {
            "timestamp": "2027-05-06T00:29:59.000Z",
            "source": v["verp"],
            "messageId": "0100017a-cccc-dddd",
            "destination": [RCPT],
            "headersTruncated": False,
            "headers": [
                {"name": "Message-ID", "value": v["msgid"]},
                {"name": "List-Unsubscribe", "value": f"<https://t.shop.example/u/{v['unsub']}>"},
            ],
            "commonHeaders": {"messageId": v["msgid"], "subject": "Happy Mother's Day"},
        },
    }


def sns(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-feedback",
        "Message": json.dumps(message),
        "Timestamp": "2027-05-06T00:30:01.000Z",
        "SignatureVersion": "1",
    }


def basic(user: str, password: str) -> dict[str, str]:
    """What SNS sends for an https://user:password@host/feedback subscription."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_ses_bounces_complaints_and_deliveries_through_sns() -> None:
    hard = read(body(sns(ses_bounce(5, status="5.1.1", diagnosticCode="smtp; 550 5.1.1 user unknown")))).events
    assert [(f.kind, f.status, f.recipient, f.format) for f in hard] == [(Kind.HARD_BOUNCE, "5.1.1", RCPT, "ses")]
    match = find_delivery(hard[0], KEYRING, "bounce")
    assert match is not None and (match.delivery_id, match.by) == (5, "verp")
    full = read(body(ses_bounce(5, "Transient", "MailboxFull", status="4.2.2"))).events[0]
    rejected = read(body(ses_bounce(5, "Transient", "ContentRejected", status="5.7.1"))).events[0]
    suppressed_list = read(body(ses_bounce(5, "Permanent", "OnAccountSuppressionList"))).events[0]
    assert (full.kind, rejected.kind, suppressed_list.kind) == (Kind.SOFT_BOUNCE, Kind.BLOCKED, Kind.HARD_BOUNCE)
    complaint = {**ses_bounce(5), "notificationType": "Complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": RCPT}], "complaintFeedbackType": "abuse"}}  # fmt: skip
    delivery = {**ses_bounce(5), "notificationType": "Delivery", "delivery": {"recipients": [RCPT]}}
    assert read(body(sns(complaint))).events[0].kind is Kind.COMPLAINT
    assert (
        read(body({"eventType": "Delivery", **{k: v for k, v in delivery.items() if k != "notificationType"}}))
        .events[0]
        .kind
        is Kind.DELIVERED
    )


def test_the_generic_shape_and_its_problems() -> None:
    v = values(8)
    batch = read(body({"events": [
        {"type": "bounce", "recipient": RCPT, "status": "5.1.1", "return_path": v["verp"]},
        {"type": "bounce", "bounce_type": "soft", "recipient": RCPT, "message_id": v["msgid"]},
        {"type": "complaint", "recipient": RCPT, "list_unsubscribe": f"<mailto:unsubscribe+{v['unsub']}@x.example>"},
        {"type": "delivered", "return_path": v["verp"]},
        {"type": "opened"},
        "nonsense",
        {"type": "bounce", "bounce_type": "very"},
    ]}))  # fmt: skip
    assert [f.kind for f in batch.events] == [Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE, Kind.COMPLAINT, Kind.DELIVERED]
    assert [find_delivery(f, KEYRING, "bounce").by for f in batch.events] == [  # type: ignore[union-attr]
        "verp", "message_id", "unsubscribe_token", "verp",
    ]  # fmt: skip
    assert batch.problems == [
        "events[4]: type must be bounce, complaint or delivered",
        "events[5]: an event must be a JSON object",
        "events[6]: bounce_type must be hard, soft or blocked",
    ]
    for bad, status in ((b"{", 400), (b"[" * 100 + b"]" * 100, 400), (body({"events": [{}] * 501}), 413)):
        with pytest.raises(WebhookError) as refused:
            read(bad)
        assert refused.value.status == status
    confirm = read(body({"Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?x"}))
    assert confirm.subscribe_url is not None and confirm.events == []


def test_only_the_key_opens_it() -> None:
    now = datetime(2027, 5, 6, tzinfo=UTC)
    data = b"{}"
    check(signed_headers(KEY, data, now), data, KEY, now)
    check(basic("sns", KEY), data, KEY, now)
    for headers, key, status in (
        ({}, KEY, 401),
        (signed_headers("another key", data, now), KEY, 401),
        (basic("sns", "guess"), KEY, 401),
        ({"Authorization": "Basic !!!"}, KEY, 401),
        (signed_headers(KEY, data, now), None, 503),
    ):
        with pytest.raises(WebhookError) as refused:
            check(headers, data, key, now)
        assert refused.value.status == status


async def test_over_http_events_reach_the_ledger(engine: AsyncEngine) -> None:
    await seed(engine, {1: (1, RCPT, "sent"), 2: (2, "kai@example.org", "sent")})
    server = TrackingServer(engine, KEYRING, FakeClock(NOW), TrackingOptions(port=0))
    server.add_route("/feedback", feedback_handler(engine, KEY, KEYRING, BounceSettings(), FakeClock(NOW)))
    await server.start()
    try:
        auth = basic("sns", KEY)
        async with aiohttp.ClientSession() as http:
            bounce = body(sns(ses_bounce(1, status="5.1.1")))
            async with http.post(f"{server.url}/feedback", data=bounce, headers=auth) as r:
                assert (r.status, await r.json()) == (200, {"recorded": 1})
            async with http.post(f"{server.url}/feedback", data=bounce, headers=auth) as r:
                assert (r.status, await r.json()) == (200, {"repeat": 1})
            delivered = body({"type": "delivered", "return_path": values(2)["verp"]})
            async with http.post(
                f"{server.url}/feedback", data=delivered, headers=signed_headers(KEY, delivered, NOW)
            ) as r:
                assert (r.status, await r.json()) == (200, {"recorded": 1})
            async with http.post(f"{server.url}/feedback", data=bounce, headers=basic("sns", "guess")) as r:
                assert (r.status, await r.json()) == (401, {"error": "bad authorization"})
    finally:
        await server.close()
    assert (await state(engine, 1))[0] == "bounced" and (await state(engine, 2))[0] == "delivered"
    assert await suppressed(engine) == {RCPT: "hard_bounce"}
